# One-off A/B for docs/performance.md (seventh pass): the optimizer step with
# LookAhead seeded inside the skip cond (the code before 6557063, emulated by
# replacing _host.seed_lookahead_ahead) and ahead of it (6557063), timed in
# turns in one process with the jnp floor. Run from the repository root:
#   KERAS_BACKEND=jax python docs/results/core_v2_steady/seed_ahead_ab.py resnet50 60
import os, sys, json
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "benchmarks"))
import warnings; warnings.filterwarnings("ignore")
import numpy as np, keras
import bench_optimizer as b
from keras_sing import sing as sing_mod, _host
import contextlib
param_set = sys.argv[1]; reps = int(sys.argv[2])
shapes = b.parameter_shapes(param_set, True)
rng = np.random.default_rng(0)
init = [rng.standard_normal(s).astype("float32") * 0.02 for s in shapes]
grads = [keras.ops.convert_to_tensor(rng.standard_normal(s).astype("float32")) for s in shapes]
orig = _host.seed_lookahead_ahead
def old_style(sing, ov, tv, finite):
    return ov, contextlib.nullcontext()
fns = {}
for name in ("host", "sing_seed_inside", "sing"):
    variables = [keras.Variable(a) for a in init]
    _host.seed_lookahead_ahead = old_style if name == "sing_seed_inside" else orig
    fn = b.step_function(b.make_optimizer("adamw", "host" if name == "host" else "sing"), variables, grads)
    fn(); fn()  # trace + compile under this setting
    fns[name] = fn
_host.seed_lookahead_ahead = orig
fns["jnp_sing"] = b.jnp_floor_functions(shapes)["jnp_sing"]
t = b.time_interleaved(fns, 3, reps)
print(param_set, {k: round(v["median_ms"], 3) for k, v in t.items()},
      "inside/floor", round(t["sing_seed_inside"]["median_ms"] / t["jnp_sing"]["median_ms"], 3),
      "ahead/floor", round(t["sing"]["median_ms"] / t["jnp_sing"]["median_ms"], 3))
