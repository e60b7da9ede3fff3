"""Run as a script: SING under tf.distribute.MultiWorkerMirroredStrategy,
2 worker processes on localhost (one CPU replica each, RING collectives over
gRPC), against the single-device `fit` on the same global batches; and a NaN
in one worker's half of a batch, which must skip the step on both workers.
Prints one JSON line. Run as `tf_multiworker.py worker INDEX OUT_DIR` (with
TF_CONFIG set) it is one worker.

Each worker runs Keras's `train_step` under `strategy.run` on its half of
every global batch: `fit` and `train_on_batch` under
MultiWorkerMirroredStrategy fail in Keras 3 itself, with any optimizer
(keras-team/keras#20585). The workers try `fit` last and report its error,
or its weights once it works."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_sing  # noqa: E402

STEPS, BATCH, WORKERS = 4, 16, 2
LOCAL_BATCH = BATCH // WORKERS
NAN_BATCH = 2
WORKER_TIMEOUT_S = 300


def model_and_data():
    """The seeded model and STEPS * BATCH samples, as in tf_mirrored.py."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(8),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS * BATCH, 12)).astype("float32")
    y = rng.standard_normal((STEPS * BATCH, 8)).astype("float32")
    return model, x, y


def nan_data():
    """The data with a NaN in one sample of batch NAN_BATCH (in worker 0's
    half of it), and the data without that batch."""
    _, x, y = model_and_data()
    x_nan = x.copy()
    x_nan[NAN_BATCH * BATCH + 1, 0] = np.nan
    keep = np.r_[0 : NAN_BATCH * BATCH, (NAN_BATCH + 1) * BATCH : len(x)]
    return (x_nan, y), (x[keep], y[keep])


def compiled_model(sing=True):
    """The seeded model, compiled with SING(AdamW) (AdamW alone if not
    `sing`)."""
    model, _, _ = model_and_data()
    host = keras.optimizers.AdamW(5e-2, weight_decay=1e-2)
    model.compile(
        optimizer=keras_sing.SING(host, lookahead_steps=3) if sing else host,
        loss="mse",
        jit_compile=False,
    )
    return model


def weights_of(model):
    """The model's weights as numpy arrays."""
    return [np.asarray(w.numpy()) for w in model.weights]


def train_single(data):
    """Weights after one epoch of single-device `fit` on `data`."""
    model = compiled_model()
    model.fit(*data, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return weights_of(model)


def train_worker(strategy, index, data):
    """Weights after Keras's `train_step` (what `fit` runs each step) on each
    global batch of `data`, this worker feeding its contiguous LOCAL_BATCH
    share of it to its replica."""
    with strategy.scope():
        model = compiled_model()
        # built before the first step, as `fit` does
        model.optimizer.build(model.trainable_variables)
    step = tf.function(
        lambda batch: strategy.run(model.train_step, args=(batch,))
    )
    x, y = (tf.constant(array) for array in data)
    for start in range(index * LOCAL_BATCH, len(x), BATCH):
        local = slice(start, start + LOCAL_BATCH)
        step((x[local], y[local]))
    return weights_of(model)


def try_fit(strategy, data, sing=True):
    """Weights after `fit` on global batches (DATA auto-sharding splits each
    between the workers), or the error `fit` raises (with AdamW alone if
    not `sing`)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices(data)
        .batch(BATCH)
        .with_options(options)
    )
    with strategy.scope():
        model = compiled_model(sing)
    try:
        model.fit(dataset, epochs=1, verbose=0)
    except Exception as error:  # upstream limitation, reported
        return f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return weights_of(model)


def worker(index, out_dir):
    """One worker: train clean and with the NaN batch, then try `fit`; write
    the weights (and `fit`'s error) to OUT_DIR/worker{index}.npz."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
    )
    assert strategy.num_replicas_in_sync == WORKERS, (
        strategy.num_replicas_in_sync
    )
    clean = model_and_data()[1:]
    runs = {
        "clean": train_worker(strategy, index, clean),
        "nan": train_worker(strategy, index, nan_data()[0]),
        "fit": try_fit(strategy, clean),
        # the upstream limitation: AdamW alone fails the same way
        "fit_host": try_fit(strategy, clean, sing=False),
    }
    arrays = {}
    for key in ("fit", "fit_host"):
        if isinstance(runs[key], str):
            arrays[f"{key}_error"] = runs.pop(key)
    runs.pop("fit_host", None)
    for key, weights in runs.items():
        arrays.update({f"{key}_{i}": w for i, w in enumerate(weights)})
    np.savez(pathlib.Path(out_dir) / f"worker{index}.npz", **arrays)


def free_ports(n):
    """n distinct free localhost ports (bound to port 0, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(out_dir):
    """Launch the WORKERS worker processes, each with its TF_CONFIG."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(WORKERS)]}
    procs = []
    for index in range(WORKERS):
        tf_config = {
            "cluster": cluster,
            "task": {"type": "worker", "index": index},
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "worker", str(index), out_dir],
                env={**os.environ, "TF_CONFIG": json.dumps(tf_config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def wait_for(procs):
    """Wait for all workers, killing them all after WORKER_TIMEOUT_S; raise
    with their output if any failed."""
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    outputs = []
    for proc in procs:
        try:
            outputs.append(
                proc.communicate(timeout=max(deadline - time.monotonic(), 1))[0]
            )
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            outputs.append(proc.communicate()[0] + "\n[killed after timeout]")
    if any(proc.returncode for proc in procs):
        raise RuntimeError(
            "\n".join(
                f"worker {i}:\n{out[-3000:]}" for i, out in enumerate(outputs)
            )
        )


def stored(npz, key):
    """The weight arrays a worker stored under `key`, in order."""
    return [
        npz[f"{key}_{i}"]
        for i in range(sum(name.startswith(f"{key}_") for name in npz.files))
    ]


def max_rel(a, b):
    """Largest difference relative to each variable's scale (1 for all-zero
    variables, e.g. freshly initialized biases)."""
    return max(
        float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) or 1.0))
        for x, y in zip(a, b, strict=True)
    )


def main():
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as out_dir:
        procs = start_workers(out_dir)
        single = train_single(model_and_data()[1:])
        single_without = train_single(nan_data()[1])
        initial = weights_of(model_and_data()[0])
        wait_for(procs)
        first, second = (
            np.load(pathlib.Path(out_dir) / f"worker{i}.npz")
            for i in range(WORKERS)
        )
        result = {
            "multiworker": max_rel(stored(first, "clean"), single),
            "multiworker_nan_batch_vs_without": max_rel(
                stored(first, "nan"), single_without
            ),
            "multiworker_nan_batch_vs_without_second": max_rel(
                stored(second, "nan"), single_without
            ),
            "workers_agree": max_rel(
                stored(second, "clean"), stored(first, "clean")
            ),
            "moved_from_init": max_rel(single, initial),
        }
        if "fit_error" in first.files:
            result["multiworker_fit_error"] = str(first["fit_error"])
            result["multiworker_fit_host_error"] = (
                str(first["fit_host_error"]) if "fit_host_error" in first.files
                else "none: the host alone trains"
            )
        else:
            result["multiworker_fit"] = max_rel(stored(first, "fit"), single)
    result["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker(int(sys.argv[2]), sys.argv[3]))
    sys.exit(main())
