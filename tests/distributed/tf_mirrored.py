"""Run as a script: SING under tf.distribute.MirroredStrategy over 2 logical
CPUs against the single-device run, and a deliberately wrong SING that
standardizes per replica. Prints one JSON line of max relative errors."""

import json
import os
import re
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sing  # noqa: E402
from keras_sing import transforms  # noqa: E402

STEPS, BATCH = 4, 16


class PerReplicaSING(keras_sing.SING):
    """WRONG on purpose: standardizes in apply(), i.e. each replica's
    gradient before the all-reduce. The equivalence check must catch it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, normalize=False, centralize=False, **kwargs)

    def apply(self, grads, trainable_variables=None):
        grads = [
            transforms.standardize(g, tuple(range(len(g.shape) - 1)) or None, 1e-8)
            for g in grads
        ]
        super().apply(grads, trainable_variables)


def model_and_data():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(8)]
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS * BATCH, 12)).astype("float32")
    y = rng.standard_normal((STEPS * BATCH, 8)).astype("float32")
    return model, x, y


def train(strategy=None, cls=keras_sing.SING, jit_compile="auto", data=None, errors=None, steps_per_execution=1, **kwargs):
    """The weights after one epoch. With `errors` (a list), an exception
    from `fit` is appended to it and the weights are read after it."""
    scope = strategy.scope() if strategy else tf.init_scope()
    with scope:
        model, x, y = model_and_data()
        if data is not None:
            x, y = data
        # (gradient_accumulation_steps under MirroredStrategy fails in Keras
        # itself, with any optimizer: "merge_call called while defining a
        # new graph" from the accumulation cond.)
        host = keras.optimizers.AdamW(5e-2, weight_decay=1e-2)
        optimizer = cls(host, lookahead_steps=3, **kwargs)
        model.compile(
            optimizer=optimizer, loss="mse", jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
    try:
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    except Exception as error:
        if errors is None:
            raise
        errors.append(error)
    return [np.asarray(w.numpy()) for w in model.weights]


def train_late_gradient(strategy=None):
    """LookAhead (k = 2) on two variables, `b` without a gradient at step 1
    (an `apply` on a subset): `(a, b)` after two steps. Each replica gets
    half the gradient, so the all-reduced one is the single device's."""
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 2)).astype("float32") for _ in range(3)]
    scope = strategy.scope() if strategy else tf.init_scope()
    with scope:
        a = keras.Variable(np.ones((3, 2), "float32"), name="a")
        b = keras.Variable(np.full((3, 2), 10.0, "float32"), name="b")
        optimizer = keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2)
        optimizer.build([a, b])
    share = 1.0 / (strategy.num_replicas_in_sync if strategy else 1)

    @tf.function
    def first_step():
        optimizer.apply([tf.constant(grads[0] * share)], [a])

    @tf.function
    def second_step():  # LookAhead syncs
        optimizer.apply([tf.constant(g * share) for g in grads[1:]], [a, b])

    for step in (first_step, second_step):
        strategy.run(step) if strategy else step()
    return [a.numpy(), b.numpy()]


def overflow_on_one_replica(strategy, **host_kwargs):
    """One `apply` under `strategy` whose gradient is finite on both
    replicas, but holds 3e38 on replica 0, where the host's own unscaling
    or clipping (`host_kwargs`) overflows: `(skipped_steps, max |change|
    of the variable, whether it is finite)`."""
    with strategy.scope():
        a = keras.Variable(np.ones((3, 2), "float32"), name="a")
        optimizer = keras_sing.SING(keras.optimizers.SGD(1e-2, **host_kwargs))
        optimizer.build([a])
    # not constant along the fan-in axis, which centralizes to zero
    usual = np.arange(6, dtype="float32").reshape(3, 2)
    huge = usual.copy()
    huge[1, 0] = 3e38

    @tf.function
    def step():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        gradient = tf.where(tf.equal(replica, 0), tf.constant(huge), tf.constant(usual))
        optimizer.apply([gradient], [a])

    strategy.run(step)
    value = a.numpy()
    return (
        int(optimizer.skipped_steps.numpy()),
        float(np.max(np.abs(value - 1.0))) if np.all(np.isfinite(value)) else float("inf"),
        bool(np.all(np.isfinite(value))),
    )


def cause(error):
    """An error's type and its cause: the line that names a known XLA
    issue, else a graph error's status line, else its first line (quoted
    node names and the traceback left out), so that two runs' errors
    compare equal when they fail the same way."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    known = [line for line in lines if "known_issues" in line]
    # a graph error's own message: "(1) INVALID_ARGUMENT:  You must feed..."
    status = [re.sub(r"^\(\d+\) ", "", line) for line in lines if re.match(r"\(\d+\) [A-Z_]+:", line)]
    line = re.sub(r"'[^']*'", "'<name>'", (known or status or lines or [""])[0])
    return f"{type(error).__name__}: {line[:200]}"


def host_alone(host, **kwargs):
    """`train`'s `cls` for the host without SING."""
    return host


def max_rel(a, b):
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y))) for x, y in zip(a, b, strict=True))


def main():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    single = train()
    _, x, y = model_and_data()
    x_nan = x.copy()
    x_nan[2 * BATCH + 1, 0] = np.nan  # one sample of batch 2: one replica's half
    keep = np.r_[0 : 2 * BATCH, 3 * BATCH : len(x)]
    result = {
        "mirrored": max_rel(train(strategy), single),
        "mirrored_nan_batch_vs_without": max_rel(
            train(strategy, data=(x_nan, y)), train(data=(x[keep], y[keep]))
        ),
        "per_replica_wrong": max_rel(train(strategy, PerReplicaSING), single),
    }
    # A variable with no gradient at step 1 is seeded like the others (its
    # slow copy used to stay zero under a strategy: the sync halved it).
    late = train_late_gradient(strategy)
    result["mirrored_late_gradient"] = max_rel(late, train_late_gradient())
    result["late_gradient_b_moved"] = float(np.max(np.abs(late[1] - 10.0)))
    # on_nonfinite="raise": the same NaN stops `fit` with SING's message
    # (tf.debugging.Assert, taken in cross-replica context after the skip),
    # and the weights are those after the batches before it.
    errors = []
    after_error = train(strategy, data=(x_nan, y), errors=errors, on_nonfinite="raise")
    result["mirrored_raise_message"] = any(
        "SING: a gradient holds NaN or inf" in str(e) for e in errors
    )
    result["mirrored_raise_error"] = "; ".join(f"{type(e).__name__}: {str(e)[-300:]}" for e in errors)
    result["mirrored_raise_weights_vs_before"] = max_rel(
        after_error, train(data=(x[: 2 * BATCH], y[: 2 * BATCH]))
    )
    # Each replica checks what its host forms (Keras unscales and clips per
    # replica): a finite gradient that overflows there skips the step.
    for name, kwargs in [
        ("unscaled", {"loss_scale_factor": 0.5}),
        ("global_clipnorm", {"global_clipnorm": 1.0}),
        ("clipnorm", {"clipnorm": 2.0}),
        # the control: a clipnorm of 1 or less cannot overflow (the
        # overflowing norm zeroes replica 0's part), so the step is taken
        ("clipnorm_control", {"clipnorm": 0.5}),
    ]:
        result[f"overflow_{name}"] = overflow_on_one_replica(strategy, **kwargs)
    try:
        result["mirrored_jit"] = max_rel(train(strategy, jit_compile=True), single)
    except Exception as error:  # documented upstream limitation
        result["mirrored_jit_error"] = cause(error)
        # the upstream limitation: plain AdamW fails the same way
        try:
            train(strategy, cls=host_alone, jit_compile=True)
            result["mirrored_jit_host_error"] = "none: the host alone trains"
        except Exception as host_error:
            result["mirrored_jit_host_error"] = cause(host_error)
    # steps_per_execution > 1 under MirroredStrategy fails in Keras/TF
    # itself (also with plain AdamW): docs/distributed.md
    try:
        result["mirrored_steps_per_execution"] = max_rel(
            train(strategy, steps_per_execution=2), single
        )
    except Exception as error:  # documented upstream limitation
        result["mirrored_steps_per_execution_error"] = cause(error)
        try:
            train(strategy, cls=host_alone, steps_per_execution=2)
            result["mirrored_steps_per_execution_host_error"] = "none: the host alone trains"
        except Exception as host_error:
            result["mirrored_steps_per_execution_host_error"] = cause(host_error)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
