"""Seventeenth pass (JAX): an overflow-safe norm in one reduction, without
max|x|. Three lanes, sum((x * c)^2) for c in (1, 2^-88, 2^86), reduced as one
(3, n) -> (3,) `jnp.sum`; the plain lane is taken where its sum is in
[2^-64, 2^120), the scaled-down one above, the scaled-up one below. Compared
with main's `transforms.l2_norm` (max|x| then the scaled sum) and the plain
`sqrt(sum(x^2))`: precision against float64, run time per size, and the XLA
compile of 200 norms of a ViT block's shapes.

Run: KERAS_BACKEND=jax python docs/results/core_v2_steady/lane_norm_seventeenth.py
"""
import os, time, sys
os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np, jax, jax.numpy as jnp
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
from keras_sing import transforms as T
BIG, SMALL = 2.0**120, 2.0**-64
SC = np.array([1.0, 2.0**-88, 2.0**86], np.float32)
def pick(s):
    s1, sd, su = s[0], s[1], s[2]
    down = jnp.logical_not(s1 < BIG); up = s1 < SMALL
    sel = jnp.where(down, sd, jnp.where(up, su, s1))
    scale = jnp.where(down, np.float32(2.0**88), jnp.where(up, np.float32(2.0**-86), np.float32(1.0)))
    return jnp.sqrt(sel) * scale
def bcast(x):
    flat = jnp.reshape(x, (1, -1))
    return pick(jnp.sum(jnp.square(flat * SC[:, None]), axis=1))
def bcast_minor(x):
    flat = jnp.reshape(x, (-1, 1))
    return pick(jnp.sum(jnp.square(flat * SC[None, :]), axis=0))
def three(x):
    return pick(jnp.stack([jnp.sum(jnp.square(x * s)) for s in SC]))
def main_norm(x): return T.l2_norm(x)
def plain(x): return jnp.sqrt(jnp.sum(jnp.square(x)))
fs = [("bcast", bcast), ("bcast_minor", bcast_minor), ("three", three), ("main", main_norm), ("plain", plain)]
rng = np.random.default_rng(0)
worst = {}
for n in [7, 100, 5000, 2**20]:
    for sc in [1e-30, 1e-20, 1e-10, 1, 1e10, 1e20, 1e30]:
        x = (rng.standard_normal(n) * sc).astype(np.float32)
        ref = np.sqrt(np.sum(x.astype(np.float64) ** 2))
        for name, f in fs:
            e = abs(float(jax.jit(f)(x)) - ref) / ref
            worst[name] = max(worst.get(name, 0.0), e)
print("worst relative error against float64, n in 7..2^20, scales 1e-30..1e30:",
      {k: float(f"{v:.2g}") for k, v in worst.items()})
for n in [2**12, 2**16, 2**20, 2**22]:
    x = jnp.asarray(rng.standard_normal(n).astype(np.float32))
    for name, f in fs:
        jf = jax.jit(f); jf(x).block_until_ready()
        t = time.perf_counter()
        for _ in range(50): r = jf(x)
        r.block_until_ready(); print(f"run n={n} {name} {(time.perf_counter()-t)/50*1e3:.3f} ms")
shapes = [(768, 768), (768,), (768, 3072), (3072,), (3072, 768), (64, 48), (48,), (10, 768)] * 25
xs = [jnp.asarray(rng.standard_normal(s).astype(np.float32)) for s in shapes]
for rep in range(3):
    for name, f in fs:
        lowered = jax.jit(lambda xs, f=f: [f(x) for x in xs]).lower(xs)
        t = time.perf_counter(); lowered.compile(); print(f"compile {name} {time.perf_counter()-t:.2f} s")
