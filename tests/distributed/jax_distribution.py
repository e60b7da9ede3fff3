"""Run as a script: SING under keras.distribution (JAX, 4 emulated CPUs)
against the single-device run. Prints one JSON line of max relative errors."""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sing  # noqa: E402

STEPS, BATCH = 4, 16


def model_and_data():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="tanh", name="dense_0"),
            keras.layers.Dense(8, name="dense_1"),
        ],
        name="sequential",
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS * BATCH, 12)).astype("float32")
    y = rng.standard_normal((STEPS * BATCH, 8)).astype("float32")
    return model, x, y


def train(distribution=None, jit_compile="auto"):
    keras.distribution.set_distribution(distribution)
    model, x, y = model_and_data()
    opt = keras_sing.SING(keras.optimizers.AdamW(5e-2, weight_decay=1e-2), lookahead_steps=3)
    model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    # each weight's partition spec, e.g. [None, "model"] (None on one device)
    sharding = {v.path: _spec(v.value.sharding) for v in model.weights}
    weights = [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]
    keras.distribution.set_distribution(None)
    return weights, sharding


def _spec(sharding):
    spec = getattr(sharding, "spec", None)
    return None if spec is None else list(spec)


def initial_weights():
    model, _, _ = model_and_data()
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]


def max_rel(a, b):
    """Largest difference relative to each variable's scale (1 for all-zero
    variables, e.g. freshly initialized biases)."""
    return max(
        float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) or 1.0)) for x, y in zip(a, b, strict=True)
    )


def main():
    devices = keras.distribution.list_devices()
    assert len(devices) == 4, devices
    single, _ = train()
    data_parallel, _ = train(keras.distribution.DataParallel(devices=devices))
    mesh = keras.distribution.DeviceMesh((2, 2), ("batch", "model"), devices)
    layout = keras.distribution.LayoutMap(mesh)
    layout[".*dense_1/kernel"] = (None, "model")
    layout[".*dense_1/bias"] = ("model",)
    layout[".*dense_0/kernel"] = ("model", None)
    model_parallel, sharding = train(keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch"))
    print(json.dumps({
        "data_parallel": max_rel(data_parallel, single),
        "model_parallel": max_rel(model_parallel, single),
        "dense_1_kernel_sharding": sharding["sequential/dense_1/kernel"],
        "dense_0_kernel_sharding": sharding["sequential/dense_0/kernel"],
        "moved_from_init": max_rel(single, initial_weights()),
    }))


if __name__ == "__main__":
    sys.exit(main())
