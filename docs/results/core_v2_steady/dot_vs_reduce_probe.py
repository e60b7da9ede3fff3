# See jax_dot_vs_reduce_probe.log. One-off probe for docs/performance.md; not part of the benchmark.
# Probe: XLA:CPU reductions vs dot-based reductions for SING's statistics (mean over fan-in, sum of squares).
import os, time, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
import jax, jax.numpy as jnp, numpy as np
rng = np.random.default_rng(0)
# resnet50-short-like shapes: conv kernels (kh,kw,in,out) fan-in axes (0,1,2)
shapes = []
for _ in range(16): shapes += [(1,1,64,64),(3,3,64,64),(1,1,64,256)]
for _ in range(16): shapes += [(1,1,256,64)]
shapes = shapes[:64]
gs = [jnp.asarray(rng.standard_normal(s).astype("float32")) for s in shapes]
print("params", sum(int(np.prod(s)) for s in shapes))

def stats_reduce(g):
    axes = tuple(range(g.ndim - 1))
    g0 = g[tuple(slice(0,1) if i in axes else slice(None) for i in range(g.ndim))]
    mu = g0 + jnp.mean(g - g0, axis=axes, keepdims=True)
    m = jnp.max(jnp.abs(g))
    c = g - mu
    return mu, jnp.sqrt(jnp.sum(jnp.square(c / m)))*m

def stats_dot(g):
    n = int(np.prod(g.shape[:-1])); g2 = g.reshape(n, g.shape[-1])
    g0 = g2[:1]
    ones = jnp.full((n,), 1.0 / n, g.dtype)
    mu = g0[0] + jnp.dot(ones, g2 - g0, precision=jax.lax.Precision.HIGHEST)
    m = jnp.max(jnp.abs(g))
    c = ((g2 - mu) / m).reshape(-1)
    return mu, jnp.sqrt(jnp.dot(c, c, precision=jax.lax.Precision.HIGHEST))*m

for name, f in [("reduce", stats_reduce), ("dot", stats_dot)] * 2:
    fn = jax.jit(lambda gs: [f(g) for g in gs])
    t0 = time.perf_counter(); c = fn.lower(gs).compile(); tc = time.perf_counter() - t0
    out = c(gs); jax.block_until_ready(out)
    ts = []
    for _ in range(30):
        t0 = time.perf_counter(); jax.block_until_ready(c(gs)); ts.append(time.perf_counter() - t0)
    print(f"{name}: compile {tc:.2f} s, step median {1e3*np.median(ts):.2f} ms")
a = jax.jit(lambda gs: [stats_reduce(g) for g in gs])(gs); b = jax.jit(lambda gs: [stats_dot(g) for g in gs])(gs)
print("max rel diff norm", max(float(abs(x[1]-y[1])/x[1]) for x, y in zip(a, b)), "mean", max(float(jnp.max(abs(x[0].reshape(-1)-y[0].reshape(-1)))) for x, y in zip(a, b)))
