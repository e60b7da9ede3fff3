# One-off A/B for docs/performance.md (seventh pass): XLA compile time of
# jax.jit(opt.stateless_apply) with the seed inside / ahead, alternated in one process.
#   KERAS_BACKEND=jax python docs/results/core_v2_steady/seed_ahead_ab_compile.py resnet50 4
import os, sys, time, re
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "benchmarks"))
import warnings; warnings.filterwarnings("ignore")
import jax, keras, contextlib
import first_step
from keras_sing import _host
orig = _host.seed_lookahead_ahead
def old_style(sing, ov, tv, finite):
    return ov, contextlib.nullcontext()
model = first_step.build_model(sys.argv[1])
tv = model.trainable_variables
res = {"inside": [], "ahead": []}
for r in range(int(sys.argv[2])):
    for name in ("inside", "ahead"):
        _host.seed_lookahead_ahead = old_style if name == "inside" else orig
        opt = first_step.make_optimizer("sing"); opt.build(tv)
        ov = [v.value for v in opt.variables]; tvals = [v.value for v in tv]
        grads = [keras.ops.zeros(v.shape) for v in tv]
        f = jax.jit(lambda t, o, g: opt.stateless_apply(o, g, t), donate_argnums=(0, 1))
        lo = f.trace(tvals, ov, grads).lower()
        t0 = time.perf_counter(); co = lo.compile(); dt = time.perf_counter() - t0
        res[name].append(round(dt, 2))
print(sys.argv[1], res, {k: round(sum(v) / len(v), 2) for k, v in res.items()})
