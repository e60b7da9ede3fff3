# One-off measurement for docs/results/performance_history.md (eleventh pass): XLA:CPU
# compile time of SING's per-variable step for N same-shaped tensors (200 (48, 48)
# float32 by default) in one jax.jit, three ways: per variable (what keras_sing
# runs), the statistics computed for groups of G stacked tensors (jax.vmap of
# transforms.standardization_statistics), and the whole step vmapped over the
# groups. Each compiled three times from a fresh jax.jit; the fastest is printed.
#   KERAS_BACKEND=jax python docs/results/core_v2_steady/grouped_compile_probe.py
import os, re, sys, time
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import jax, jax.numpy as jnp
from keras_sing import transforms

def hyper(softplus=50.0, axes=(0,), standardize=True):
    return transforms.AdamHyper(0.9, 0.999, 0.01, 1e-8, softplus, axes, True, standardize, None, 0.5)
H = hyper()
def step(g, statistics=None):
    r = transforms.sing_adam_step(g, g, g, g, None, 3, 1e-3, H, statistics=statistics)
    return r[:3] + (r[5],)

def per_var(xs):
    return [step(x) for x in xs]

G = int(os.environ.get("G", 12))
def grouped(xs):
    out = []
    for i in range(0, len(xs), G):
        chunk = xs[i:i + G]
        stacked = jnp.stack(chunk)
        mean, norm, finite = jax.vmap(lambda g: transforms.standardization_statistics(g, (0,)))(stacked)
        for j, x in enumerate(chunk):
            out.append(step(x, statistics=(mean[j], norm[j], finite[j])))
    return out

def grouped_step(xs):
    out = []
    for i in range(0, len(xs), G):
        stacked = jnp.stack(xs[i:i + G])
        res = jax.vmap(step)(stacked)
        for j in range(len(xs[i:i+G])):
            out.append(tuple(r[j] for r in res))
    return out

N = int(os.environ.get("N", 200))
SHAPE = tuple(int(s) for s in os.environ.get("SHAPE", "48,48").split(","))
for name, fn in [("per_var", per_var), ("grouped_stats", grouped), ("grouped_step", grouped_step)] * 2:
    xs = [jnp.ones(SHAPE) * i for i in range(N)]
    times = []
    for _ in range(3):
        # a fresh function each time: jax.jit would otherwise return the executable it compiled before
        lowered = jax.jit(lambda xs: fn(xs)).lower(xs)
        start = time.perf_counter(); compiled = lowered.compile(); times.append(time.perf_counter() - start)
    txt = compiled.as_text()
    fusions = len(re.findall(r"\S+ fusion\(", txt))
    print(f"{name:16s} {min(times):6.2f} s  {1000 * min(times) / N:6.2f} ms/var  fusions {fusions} lines {txt.count(chr(10))}", flush=True)
