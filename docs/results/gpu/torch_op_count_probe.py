"""The torch ops SING's optimizer step dispatches (on a GPU, each one that
computes is a kernel launch; `_foreach` ops count once), on ViT-B/16's 198
tensor shapes at CPU size, with where the per-tensor ones come from. Run
from the repository root (V=sing for the LookAhead variant):

    .venv/bin/python docs/results/gpu/torch_op_count_probe.py
"""

import collections
import os
import sys
import traceback

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, "benchmarks")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import bench_optimizer as b  # noqa: E402

TRACED = ("_to_copy", "copy_", "zeros", "fill_", "zero_", "lift_fresh", "empty", "sub", "add", "mean")

shapes = b.parameter_shapes("vit_b16", True)
rng = np.random.default_rng(0)
variables = [keras.Variable(rng.standard_normal(s).astype("float32") * 0.02) for s in shapes]
grads = [torch.tensor(rng.standard_normal(s), dtype=torch.float32) for s in shapes]
step = b.step_function(b.make_optimizer("adamw", os.environ.get("V", "sing_no_lookahead")), variables, grads)
step()
step()

totals, sources = collections.Counter(), collections.Counter()


def caller(frames):
    """The last two Keras or keras_sing frames, innermost first."""
    ours = [f for f in frames if "keras_sing" in f.filename or "keras/src" in f.filename]
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in ours[-2:][::-1])


class CountOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        totals[name] += 1
        if name in TRACED:
            sources[(name, caller(traceback.extract_stack()))] += 1
        return func(*args, **(kwargs or {}))


with CountOps():
    step()
print("dispatched ops:", sum(totals.values()), totals.most_common(12))
for (name, where), count in sources.most_common(25):
    print(count, (name, where))
