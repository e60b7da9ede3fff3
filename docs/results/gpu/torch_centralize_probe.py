"""torch's batched step with the centralization stacked by shape
(`backend.torch.centralize_all`) against one `centralize` per gradient (the
code before), timed in turns in one process, SING(AdamW) and Keras's AdamW:
on ViT-B/16's 198 tensor shapes with each dim capped at 2 (the CPU-side cost
a GPU's launching thread pays, as in torch_overhead_probe.py), and on the
CPU-sized parameter sets of `bench_optimizer.py --short` (where the stacking's
extra copy of the gradients counts). Run from the repository root:

    .venv/bin/python docs/results/gpu/torch_centralize_probe.py
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, "benchmarks")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_optimizer as b  # noqa: E402
from keras_sing.backend import torch as torch_backend  # noqa: E402

torch.set_num_threads(1)
stacked = torch_backend.centralize_all


def one_per_gradient(grads, axes):
    return [torch_backend.centralize(g, a) if a else g for g, a in zip(grads, axes, strict=True)]


def with_centralize(fn, centralize_all):
    def run():
        torch_backend.centralize_all = centralize_all
        try:
            return fn()
        finally:
            torch_backend.centralize_all = stacked
    return run


SETS = {
    "vit_b16, dims capped at 2": b.launch_bound_shapes("vit_b16"),
    "vit_b16 --short (ViT-Ti/16)": b.parameter_shapes("vit_b16", True),
    "resnet50 --short": b.parameter_shapes("resnet50", True),
}
for name, shapes in SETS.items():
    rng = np.random.default_rng(0)
    grads = [torch.tensor(rng.standard_normal(s) * 0.1, dtype=torch.float32) for s in shapes]
    fns = {}
    for variant in ["host", "sing"]:
        variables = [keras.Variable(rng.standard_normal(s).astype("float32") * 0.02) for s in shapes]
        step = b.step_function(b.make_optimizer("adamw", variant), variables, grads)
        fns[variant] = with_centralize(step, stacked)
        if variant == "sing":
            variables = [keras.Variable(rng.standard_normal(s).astype("float32") * 0.02) for s in shapes]
            step = b.step_function(b.make_optimizer("adamw", variant), variables, grads)
            fns["sing, one centralize per gradient"] = with_centralize(step, one_per_gradient)
    small = "capped" in name
    results = b.time_interleaved(fns, 20 if small else 5, 300 if small else 40)
    print(f"== {name}: {len(shapes)} tensors, {sum(int(np.prod(s)) for s in shapes) / 1e6:.2f}M parameters")
    for variant, r in results.items():
        print(f"{variant}: median {r['median_ms']:.2f} ms, mean {r['mean_ms']:.2f} ms, "
              f"{r['mean_ms'] / results['host']['mean_ms']:.2f}x host (means)")
