import os, collections, traceback
os.environ["KERAS_BACKEND"] = "torch"
import sys; sys.path.insert(0, "benchmarks")
import numpy as np, torch, keras
import bench_optimizer as b
from torch.utils._python_dispatch import TorchDispatchMode
shapes = b.parameter_shapes("vit_b16", True)
rng = np.random.default_rng(0)
variables = [keras.Variable(rng.standard_normal(s).astype("float32") * 0.02) for s in shapes]
grads = [torch.tensor(rng.standard_normal(s), dtype=torch.float32) for s in shapes]
opt = b.make_optimizer("adamw", os.environ.get("V", "sing_no_lookahead"))
fn = b.step_function(opt, variables, grads); fn(); fn()
c = collections.Counter(); total = collections.Counter()
class Mode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        total[name] += 1
        if name in ("_to_copy", "copy_", "zeros", "fill_", "zero_", "lift_fresh", "empty", "sub", "add", "mean"):
            fr = [f for f in traceback.extract_stack() if ("keras_sing" in f.filename or "keras/src" in f.filename) and "python_dispatch" not in f.filename]
            loc = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in fr[-2:][::-1])
            c[(name, loc)] += 1
        return func(*args, **(kwargs or {}))
with Mode():
    fn()
print("dispatched ops:", sum(total.values()), total.most_common(12))
for k, v in c.most_common(25): print(v, k)
