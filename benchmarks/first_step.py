"""Time to the first training step (trace + compile + run), SING vs its host.

    KERAS_BACKEND=jax python benchmarks/first_step.py --models transformer,resnet50
    KERAS_BACKEND=jax python benchmarks/first_step.py --code-path ../old_checkout  # another keras_sing

Each (model, optimizer) runs in a fresh Python process, so no compilation
cache is shared: `model.fit` on one batch with `jit_compile=True` (XLA on
TensorFlow and JAX), timed from the call to the end of the step; then the
steady step over a few more batches. The models have the structure users
compile (a 12-block ViT-style transformer, ~200 variables; a
ResNet-50-shaped bottleneck network, 161 variables) at CPU-sized widths:
compile time grows with the number of variables and ops, not their size.
Prints one JSON line per run and a table of SING/host ratios.
"""

import argparse
import json
import os
import subprocess
import sys
import time

MODELS = ("transformer", "resnet50")
OPTIMIZERS = ("adamw", "sing", "sing_ignore")
# also accepted by --optimizers: SING without LookAhead
MORE_OPTIMIZERS = ("sing_no_lookahead",)


def build_model(name):
    import keras
    import keras_hub

    if name == "transformer":
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(32, 32, 3), patch_size=8, num_layers=12, num_heads=3,
            hidden_dim=48, mlp_dim=96,
        )
        out = keras.layers.Dense(10)(backbone.output[:, 0])
    else:
        backbone = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 64, 64, 64], stackwise_num_blocks=[3, 4, 6, 3],
            stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
            image_shape=(32, 32, 3),
        )
        out = keras.layers.Dense(10)(
            keras.layers.GlobalAveragePooling2D()(backbone.output)
        )
    return keras.Model(backbone.input, out)


def make_optimizer(name):
    import keras

    import keras_sing

    host = keras.optimizers.AdamW(1e-3, weight_decay=1e-2)
    if name == "adamw":
        return host
    if name not in OPTIMIZERS + MORE_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: one of {OPTIMIZERS + MORE_OPTIMIZERS}")
    on_nonfinite = "ignore" if name == "sing_ignore" else "skip"
    lookahead = name != "sing_no_lookahead"
    return keras_sing.SING(host, on_nonfinite=on_nonfinite, lookahead=lookahead)


def run_one(model_name, optimizer_name, batch_size=8, steady_steps=5):
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = build_model(model_name)
    model.compile(
        make_optimizer(optimizer_name),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    x = np.random.default_rng(0).standard_normal((batch_size, 32, 32, 3)).astype("float32")
    y = np.zeros((batch_size,), "int32")
    start = time.perf_counter()
    model.train_on_batch(x, y)
    keras.ops.convert_to_numpy(model.trainable_variables[0].value)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steady_steps):
        model.train_on_batch(x, y)
    keras.ops.convert_to_numpy(model.trainable_variables[0].value)
    steady = (time.perf_counter() - start) / steady_steps
    return {
        "backend": keras.backend.backend(), "model": model_name,
        "optimizer": optimizer_name, "variables": len(model.trainable_variables),
        "first_step_s": round(first, 3), "steady_step_ms": round(1e3 * steady, 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--code-path", default=None,
                        help="a keras_sing checkout to measure instead of this one")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "OPTIMIZER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return 0
    env = dict(os.environ)
    root = args.code_path or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    rows = []
    for model in args.models.split(","):
        for opt in args.optimizers.split(","):
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--one", model, opt],
                env=env, capture_output=True, text=True, cwd=root,
            )
            if out.returncode:
                sys.stderr.write(out.stderr[-3000:])
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["code"] = args.label
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n| backend | model | optimizer | first step (s) | ratio | steady step (ms) | ratio |  ({args.label})")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["optimizer"] == "adamw")
        print(f"| {r['backend']} | {r['model']} | {r['optimizer']} | {r['first_step_s']:.1f} | "
              f"{r['first_step_s'] / base['first_step_s']:.2f}x | {r['steady_step_ms']:.1f} | "
              f"{r['steady_step_ms'] / base['steady_step_ms']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
