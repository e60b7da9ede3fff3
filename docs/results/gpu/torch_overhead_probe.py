"""CPU-side cost per optimizer step on torch, with tensors too small for
compute to matter: what a GPU's launching thread pays. 198 tensors of
ViT-B/16's ranks, each dim capped at 2. Run from the repository root:

    .venv/bin/python docs/results/gpu/torch_overhead_probe.py
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, "benchmarks")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_optimizer as b  # noqa: E402
from gpu_suite import published_standardize  # noqa: E402

torch.set_num_threads(1)
WARMUP, REPS = 20, 200
shapes = b.launch_bound_shapes("vit_b16")
rng = np.random.default_rng(0)


def median_ms(fn):
    return b.time_it(fn, WARMUP, REPS)["median_ms"]


results = {}
for variant in ["host", "sing_no_lookahead", "sing"]:
    variables = [keras.Variable(rng.standard_normal(s).astype("float32")) for s in shapes]
    grads = [torch.tensor(rng.standard_normal(s), dtype=torch.float32) for s in shapes]
    results[variant] = median_ms(b.step_function(b.make_optimizer("adamw", variant), variables, grads))

params = []
for s in shapes:
    p = torch.nn.Parameter(torch.tensor(rng.standard_normal(s), dtype=torch.float32))
    p.grad = torch.randn(s)
    params.append(p)
opt = torch.optim.AdamW(params, lr=1e-3, foreach=True)


@torch.no_grad()
def torch_adamw_foreach():
    opt.step()


@torch.no_grad()
def published_style():
    published_standardize(params)
    opt.step()


results["torch_adamw_foreach"] = median_ms(torch_adamw_foreach)
results["published_style"] = median_ms(published_style)
for name, ms in results.items():
    print(f"{name}: {ms:.2f} ms")
