# One-off measurement for docs/results/performance_history.md (tenth pass): XLA:CPU
# compile time per variable of the pieces of SING's step, each compiled alone for
# 200 (48, 48) float32 tensors in one jax.jit (fastest of 3 compiles), against an
# AdamW-like update; a cost model with less noise than whole first steps.
#   KERAS_BACKEND=jax python docs/results/core_v2_steady/compile_cost_per_variable.py
import os, re, sys, time
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import jax, jax.numpy as jnp
from keras_sing import transforms

def hyper(softplus=50.0, axes=(0,), standardize=True):
    return transforms.AdamHyper(0.9, 0.999, 0.01, 1e-8, softplus, axes, True, standardize, None, 0.5)

def step(g, **kw):
    return transforms.sing_adam_step(g, g, g, g, None, 3, 1e-3, **kw)[:4]

PIECES = {
    "elementwise sin(g) * 2 + 1": lambda g: jnp.sin(g) * 2 + 1,
    "AdamW-like update (3 outputs)": lambda g: (g * 0.1 + g, g * g * 1e-3 + g, g - 1e-3 * g / (jnp.sqrt(g * g) + 1e-7)),
    "sum(g)": lambda g: jnp.sum(g),
    "sum(g^2), max|g|, mean(g, 0)": lambda g: (jnp.sum(g * g), jnp.max(jnp.abs(g)), jnp.mean(g, axis=0)),
    "power_of_two_scale(max|g|)": lambda g: transforms.power_of_two_scale(jnp.max(jnp.abs(g))),
    "softplus_calibrate": lambda g: transforms.softplus_calibrate(g, 50.0),
    "standardization_statistics": lambda g: transforms.standardization_statistics(g, (0,))[:2],
    "sing_adam_step, statistics given": lambda g: step(g, hyper=hyper(), statistics=(None, jnp.float32(2.0), True)),
    "sing_adam_step, unstandardized": lambda g: step(g, hyper=hyper(None, None, False)),
    "sing_adam_step, no softplus": lambda g: step(g, hyper=hyper(None)),
    "sing_adam_step": lambda g: step(g, hyper=hyper()),
}
N = int(os.environ.get("N", 200))
for name, fn in PIECES.items():
    xs = [jnp.ones((48, 48)) * i for i in range(N)]
    times = []
    for _ in range(3):
        lowered = jax.jit(lambda xs: [fn(x) for x in xs]).lower(xs)
        start = time.perf_counter(); compiled = lowered.compile(); times.append(time.perf_counter() - start)
    fusions = len(re.findall(r" fusion\(", compiled.as_text()))
    print(f"{name:34s} {1000 * min(times) / N:6.2f} ms/variable  {fusions / N:4.1f} fusions/variable")
