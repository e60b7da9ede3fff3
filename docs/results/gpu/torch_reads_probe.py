"""torch's batched step reading variables' tensors directly (`_host._torch_values`)
and passing torch gradients unconverted (`_host._torch_tensors`), against the same
step with the reads through `Variable.value` and every gradient through Keras's
`convert_to_tensor` (the code before), timed in turns in one process. Tensors of
ViT-B/16's 198 shapes, each dim capped at 2, as in torch_overhead_probe.py: the
CPU-side cost a GPU's launching thread pays. Run from the repository root:

    .venv/bin/python docs/results/gpu/torch_reads_probe.py
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, "benchmarks")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_optimizer as b  # noqa: E402
from keras_sing import _host  # noqa: E402

torch.set_num_threads(1)
WARMUP, REPS = 20, 300
shapes = b.launch_bound_shapes("vit_b16")
rng = np.random.default_rng(0)
grads = [torch.tensor(rng.standard_normal(s), dtype=torch.float32) for s in shapes]


def through_value(variables):
    return [_host.read(v) for v in variables]


def all_converted(grads):
    values = [None if g is None else _host.backend_lib.values_of(g) for g in grads]
    return [None if g is None else keras.ops.convert_to_tensor(g) for g in values]


def with_old_reads(fn):
    def run():
        new = _host._torch_values, _host._torch_tensors
        _host._torch_values, _host._torch_tensors = through_value, all_converted
        try:
            return fn()
        finally:
            _host._torch_values, _host._torch_tensors = new
    return run


fns = {}
for variant in ["host", "sing_no_lookahead", "sing"]:
    variables = [keras.Variable(rng.standard_normal(s).astype("float32")) for s in shapes]
    fns[variant] = b.step_function(b.make_optimizer("adamw", variant), variables, grads)
    if variant != "host":
        variables = [keras.Variable(rng.standard_normal(s).astype("float32")) for s in shapes]
        fns[variant + ", reads before"] = with_old_reads(
            b.step_function(b.make_optimizer("adamw", variant), variables, grads))
results = b.time_interleaved(fns, WARMUP, REPS)
for name, r in results.items():
    print(f"{name}: median {r['median_ms']:.2f} ms, mean {r['mean_ms']:.2f} ms, "
          f"{r['median_ms'] / results['host']['median_ms']:.2f}x host")
