"""CPU-side cost per optimizer step on torch, with tensors too small for compute to matter:
what a GPU's launching thread pays. 198 tensors of ViT-B/16's ranks, each dim capped at 2."""
import os, time, statistics
os.environ["KERAS_BACKEND"] = "torch"
import sys; sys.path.insert(0, "benchmarks")
import numpy as np, torch, keras
import bench_optimizer as b
torch.set_num_threads(1)
shapes = [tuple(min(d, 2) for d in s) for s in b.parameter_shapes("vit_b16", True)]
rng = np.random.default_rng(0)
def t(fn, n=200):
    for _ in range(20): fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)
res = {}
for variant in ["host", "sing_no_lookahead", "sing"]:
    variables = [keras.Variable(rng.standard_normal(s).astype("float32")) for s in shapes]
    grads = [torch.tensor(rng.standard_normal(s), dtype=torch.float32) for s in shapes]
    res[variant] = t(b.step_function(b.make_optimizer("adamw", variant), variables, grads))
params = []
for s in shapes:
    p = torch.nn.Parameter(torch.tensor(rng.standard_normal(s), dtype=torch.float32)); p.grad = torch.randn(s); params.append(p)
opt = torch.optim.AdamW(params, lr=1e-3, foreach=True)
def pub():
    with torch.no_grad():
        for p in params:
            g = p.grad
            if g.dim() > 1:
                g.sub_(g.mean(dim=tuple(range(1, g.dim())), keepdim=True))
            g.div_(g.norm() + 1e-8)
        opt.step()
def host_only():
    with torch.no_grad(): opt.step()
res["torch_adamw_foreach"] = t(host_only); res["published_style"] = t(pub)
for k, v in res.items(): print(f"{k}: {v:.2f} ms")
