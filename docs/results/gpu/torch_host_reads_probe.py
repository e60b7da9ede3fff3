"""torch's eager step with LookAhead's flags read on the host together with
the finiteness flag, before the step's kernels are launched (one read per
step; the code now) against the code before: the finiteness flag, then the
seed flag, then the sync flag read after the update was launched (three
reads per step). Timed in turns in one process, SING(AdamW) with LookAhead
and Keras's AdamW, on ViT-B/16's 198 tensor shapes with each dim capped at 2
(the CPU-side cost a GPU's launching thread pays, as in
torch_overhead_probe.py). On a CPU a read costs no wait, so this measures
only what the change adds to the Python side; what it saves (the host
waiting for the update to run before it launches the next step) shows only
on a GPU. Run from the repository root:

    .venv/bin/python docs/results/gpu/torch_host_reads_probe.py
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, "benchmarks")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_optimizer as b  # noqa: E402
import keras  # noqa: E402
from keras_sing import _host  # noqa: E402

torch.set_num_threads(1)
shapes = b.launch_bound_shapes("vit_b16")
current = _host.finiteness_check, _host._torch_lookahead


def finiteness_check_before(sing, grads, variables, *, stateful=False):
    """The check before: no LookAhead flags read with the finiteness flag."""
    return current[0](sing, grads, variables)


def torch_lookahead_before(sing, host_backend_update_step, grads, variables,
                           learning_rate, lookahead_variables, slots):
    """`_host._torch_lookahead` before: one read before the update, one after."""
    from keras_sing.backend import torch as torch_backend

    host = sing.inner_optimizer
    step, is_update = _host.real_step(host, _host.read(host._iterations))
    first, sync = _host.transforms.lookahead_flags(step, sing.lookahead_steps, is_update)
    weights = _host._torch_values(lookahead_variables)
    slow = _host._torch_values(slots)
    with torch_backend.no_grad():
        if bool(first):
            torch_backend.lookahead_seed(slow, weights)
        host_backend_update_step(grads, variables, learning_rate)
        if bool(sync):
            torch_backend.lookahead_sync(weights, slow, sing.lookahead_alpha)


def with_reads(fn, check, lookahead):
    def run():
        _host.finiteness_check, _host._torch_lookahead = check, lookahead
        try:
            return fn()
        finally:
            _host.finiteness_check, _host._torch_lookahead = current
    return run


rng = np.random.default_rng(0)
grads = [torch.tensor(rng.standard_normal(s) * 0.1, dtype=torch.float32) for s in shapes]
fns = {}
for name, variant, reads in [
    ("host", "host", current),
    ("sing, one read (now)", "sing", current),
    ("sing, three reads (before)", "sing", (finiteness_check_before, torch_lookahead_before)),
]:
    variables = [keras.Variable(rng.standard_normal(s).astype("float32") * 0.02) for s in shapes]
    fns[name] = with_reads(b.step_function(b.make_optimizer("adamw", variant), variables, grads), *reads)
results = b.time_interleaved(fns, 20, 300)
print(f"== vit_b16, dims capped at 2: {len(shapes)} tensors")
for name, r in results.items():
    print(f"{name}: median {r['median_ms']:.2f} ms, mean {r['mean_ms']:.2f} ms, "
          f"{r['mean_ms'] / results['host']['mean_ms']:.2f}x host (means)")
