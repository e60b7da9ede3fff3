"""The GPU suite of issue 11, for one backend (benchmarks/gpu_suite.sh runs it
for JAX and torch; see docs/performance.md, "GPU").

    KERAS_BACKEND=jax python benchmarks/gpu_suite.py --backend jax --out OUT
    KERAS_BACKEND=torch python benchmarks/gpu_suite.py --backend torch --out OUT --dry-run

Parts (`--only`, comma-separated; all by default):
- tests: the golden and core tests (tests/test_golden.py, test_sing.py,
  test_transforms.py) under pytest on this backend;
- optimizer: the optimizer step alone (bench_optimizer.optimizer_step_bench)
  on ViT-B/16 and ResNet-50 parameter sets, float32 and bfloat16 variables,
  hosts AdamW, SGD and Lion, SING with and without LookAhead against the host
  in the same run; on torch also the published PyTorch SING's style (an eager
  per-tensor centralize + normalize loop, then fused torch AdamW) against
  fused torch AdamW;
- train: the whole train step (bench_optimizer.train_step_bench) of KerasHub
  ResNet-50 and ViT-B/16 under mixed_bfloat16, SING(AdamW) vs AdamW: steady
  step and first step (trace, compile and run);
- memory: peak device memory of SING(AdamW) vs AdamW, each in a fresh process,
  for the optimizer step on the parameter sets and the train step of the
  models; the bound is AdamW's peak plus one float32 copy of the weights.

Unless `--dry-run`, it exits unless the backend computes on a GPU. With
`--dry-run` the same parts run at CPU size (small parameter set, tiny models,
2 repetitions) on whatever device there is, and the JSON says
`"dry_run": true`: those numbers are not GPU results.

Writes OUT/<backend>.json ({"device", "command", "versions", "results":
[{"name", "value", "host_value", "ratio", "target", ...}], ...}) after every
row, and OUT/<backend>.md (benchmarks/gpu_tables.py renders it). Rows of an
earlier run in OUT/<backend>.json are kept unless re-measured, so parts can
run as separate commands into the same folder.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import resource
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
PARTS = ("tests", "optimizer", "train", "memory")
CORE_TESTS = ["tests/test_golden.py", "tests/test_sing.py", "tests/test_transforms.py"]
TRAIN_TARGET, FIRST_STEP_TARGET = 1.03, 1.5  # issue 11: SING(AdamW) / AdamW


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, help="jax or torch (TensorFlow cannot be measured on the GPU machine)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--dry-run", action="store_true", help="CPU-sized, any device; results flagged dry_run")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the tests part")
    parser.add_argument("--param-sets", default=None, help="default vit_b16,resnet50 (dry run: small)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--hosts", default="adamw,sgd,lion")
    parser.add_argument("--models", default="resnet,vit", help="train and memory parts")
    parser.add_argument("--memory", default="step,train", help="memory part: 'step' (parameter sets), 'train' (models)")
    parser.add_argument("--reps", type=int, default=None, help="optimizer-step repetitions (default 50; dry run 2)")
    parser.add_argument("--train-reps", type=int, default=None, help="train-step repetitions (default 20; dry run 2)")
    parser.add_argument("--train-batch-size", type=int, default=None, help="default 64 (dry run 4)")
    parser.add_argument("--train-image-size", type=int, default=None, help="default 224 (dry run 32)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.only = [p for p in args.only.split(",") if p]
    unknown = set(args.only) - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if args.skip_tests and "tests" in args.only:
        args.only.remove("tests")
    dry = args.dry_run
    args.param_sets = [p for p in (args.param_sets or ("small" if dry else "vit_b16,resnet50")).split(",") if p]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.hosts = [h for h in args.hosts.split(",") if h]
    args.models = [m for m in args.models.split(",") if m]
    args.memory = [m for m in args.memory.split(",") if m]
    args.reps = args.reps or (2 if dry else 50)
    args.train_reps = args.train_reps or (2 if dry else 20)
    args.warmup = 1 if dry else 5
    args.train_batch_size = args.train_batch_size or (4 if dry else 64)
    args.train_image_size = args.train_image_size or (32 if dry else 224)
    return args


def log(*parts):
    print(f"[gpu_suite {time.strftime('%H:%M:%S')}]", *parts, flush=True)


# ----------------------------------------------------------------- output --


class Report:
    """OUT/<backend>.json and .md, rewritten after every row."""

    def __init__(self, args, bench):
        import gpu_tables

        self.tables = gpu_tables
        self.path = pathlib.Path(args.out) / f"{args.backend}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        device, _ = bench.compute_device()
        command = os.environ.get("GPU_SUITE_COMMAND") or " ".join([pathlib.Path(sys.executable).name, *sys.argv])
        self.payload = {"backend": args.backend, "device": device, "dry_run": bool(args.dry_run),
                        "command": command, "versions": versions(bench), "results": []}
        if self.path.exists():  # an earlier part of the same campaign: keep its rows
            old = json.loads(self.path.read_text())
            if old.get("dry_run") != self.payload["dry_run"] or old.get("device") != device:
                sys.exit(f"{self.path} holds results of another device or mode ({old.get('device')!r}, "
                         f"dry_run={old.get('dry_run')}): use another --out")
            self.payload["results"] = old.get("results", [])
            self.payload["tests"] = old.get("tests")
            earlier = old.get("commands") or [old.get("command")]
            self.payload["commands"] = [*earlier, command]
        self.write()

    def add(self, row):
        row = {k: v for k, v in row.items() if v is not None}
        row["ratio"] = round(row["value"] / row["host_value"], 4)
        row["met"] = bool(row["ratio"] <= row["target"])
        results = [r for r in self.payload["results"] if r["name"] != row["name"]]
        self.payload["results"] = results + [row]
        log(f"{row['name']}: {row['value']:.4g} vs {row['host_value']:.4g} {row['unit']} -> "
            f"ratio {row['ratio']:.3f} (target <= {row['target']}: {'met' if row['met'] else 'MISSED'})")
        self.write()

    def write(self):
        self.path.write_text(json.dumps(self.payload, indent=1) + "\n")
        self.path.with_suffix(".md").write_text(self.tables.markdown(self.payload))


def versions(bench):
    import keras
    import numpy as np

    import keras_sing

    info = {"python": platform.python_version(), "keras": keras.__version__, "keras_sing": keras_sing.__version__,
            "numpy": np.__version__, "cpu": bench.cpu_name(), "cpu_count": os.cpu_count()}
    try:
        import keras_hub

        info["keras_hub"] = keras_hub.__version__
    except ImportError:
        pass
    if bench.BACKEND == "jax":
        import jax
        import jaxlib

        info.update(jax=jax.__version__, jaxlib=jaxlib.__version__)
    elif bench.BACKEND == "torch":
        import torch

        info.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    info.setdefault("commit", os.environ.get("KERAS_SING_COMMIT", "unknown (no git)"))
    return info


# ------------------------------------------------------------------ parts --


def run_tests(args, report):
    """The golden and core tests under pytest, on this backend's device."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CORE_TESTS]
    log("tests:", " ".join(cmd))
    t0 = time.perf_counter()
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        tail = (tail + [line.rstrip()])[-5:]
    rc = proc.wait()
    summary = next((t for t in reversed(tail) if re.search(r"\d+ (passed|failed|error)", t)), tail[-1] if tail else "")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", summary)}
    report.payload["tests"] = {"command": " ".join(["python", *cmd[1:]]), "rc": rc, "summary": summary,
                               "seconds": round(time.perf_counter() - t0, 1), **counts}
    report.write()
    log(f"tests: rc {rc}: {summary}")
    return rc == 0 and counts.get("passed", 0) > 0


def published_standardize(params, eps=1e-8):
    """The published PyTorch SING's gradient standardization, as its code
    writes it: an eager loop over the parameters that centralizes each
    gradient over dims 1.. and divides it by its norm, in place."""
    for p in params:
        g = p.grad
        if g.dim() > 1:
            g.sub_(g.mean(dim=tuple(range(1, g.dim())), keepdim=True))
        g.div_(g.norm() + eps)


def published_torch_style_bench(param_set, shapes, dtype, warmup, reps, bench, seed=0):
    """The published PyTorch SING's style, written in plain torch: an eager
    Python loop over the tensors that centralizes each gradient (mean over
    dims 1..) and divides it by its norm, in place, then a fused
    torch.optim.AdamW step; against the fused AdamW step alone."""
    import numpy as np
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(seed)
    tdtype = getattr(torch, dtype)

    def make():
        params = []
        for s in shapes:
            p = torch.nn.Parameter(torch.tensor(rng.standard_normal(s) * 0.02, dtype=tdtype, device=device))
            p.grad = torch.tensor(rng.standard_normal(s), dtype=tdtype, device=device)
            params.append(p)
        try:
            opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, fused=True)
            opt.step()  # fused is refused at the first step where unsupported
        except RuntimeError:
            opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, foreach=True)
        return params, opt

    def timed(with_standardize):
        params, opt = make()

        @torch.no_grad()
        def step():
            if with_standardize:
                published_standardize(params)
            opt.step()
            return params[0]

        return bench.time_it(step, warmup, reps), ("fused" if opt.defaults.get("fused") else "foreach")

    (host, kind), (sing, _) = timed(False), timed(True)
    return host, sing, kind


def run_optimizer(args, report, bench):
    for param_set in args.param_sets:
        shapes = bench.parameter_shapes(param_set, args.dry_run)
        n_params = sum(int(bench.np.prod(s)) for s in shapes)
        for dtype in args.dtypes:
            for host in args.hosts:
                log(f"optimizer step: {param_set} ({n_params / 1e6:.2f}M params, {len(shapes)} tensors), {dtype}, {host}")
                rows = bench.optimizer_step_bench(param_set, shapes, [host], args.warmup, args.reps, dtype=dtype)
                base = next(r for r in rows if r["variant"] == "host")
                for r in rows:
                    if r["variant"] == "host":
                        continue
                    lookahead = r["variant"] == "sing"
                    report.add({
                        "name": f"optimizer_step/{param_set}/{dtype}/{host}/{r['variant']}", "part": "optimizer",
                        "value": r["mean_ms"], "host_value": base["mean_ms"], "unit": "ms", "statistic": "mean",
                        "target": bench.TARGETS[(bench.BACKEND, lookahead)],
                        "target_note": None if host == "adamw" else "the issue's target is for AdamW; for reference",
                        "median_ms": r["median_ms"], "host_median_ms": base["median_ms"], "iqr_ms": r["iqr_ms"],
                        "state_bytes_per_param": r["state_bytes_per_param"],
                        "host_state_bytes_per_param": base["state_bytes_per_param"],
                        "params": n_params, "tensors": len(shapes), "dtype": dtype, "reps": args.reps,
                        "description": f"SING({host}{'' if lookahead else ', lookahead=False'}) vs {host}, optimizer step",
                    })
            if bench.BACKEND == "torch":
                log(f"optimizer step: {param_set}, {dtype}, published PyTorch SING style vs fused torch AdamW")
                host, sing, kind = published_torch_style_bench(param_set, shapes, dtype, args.warmup, args.reps, bench)
                report.add({
                    "name": f"optimizer_step/{param_set}/{dtype}/published_torch_style/adamw_{kind}", "part": "optimizer",
                    "value": sing["mean_ms"], "host_value": host["mean_ms"], "unit": "ms", "statistic": "mean",
                    "target": bench.TARGETS[("torch", False)], "median_ms": sing["median_ms"], "host_median_ms": host["median_ms"],
                    "params": n_params, "tensors": len(shapes), "dtype": dtype, "reps": args.reps,
                    "description": f"plain torch: per-tensor centralize + normalize loop, then torch AdamW({kind}=True), "
                                   f"vs torch AdamW({kind}=True) alone (no keras_sing)",
                })


def run_train(args, report, bench):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for model in args.models:
            log(f"train step: {model} ({'tiny' if args.dry_run else 'full'}), {args.train_image_size}px, batch {args.train_batch_size}")
            host, sing = bench.train_step_bench(model, args.dry_run, args.warmup, args.train_reps,
                                                args.train_batch_size, args.train_image_size)
            common = {"part": "train", "unit": "ms", "params": host["params"], "batch_size": host["batch_size"],
                      "image_size": host["image_size"], "policy": "mixed_bfloat16", "reps": args.train_reps}
            label = {"resnet": "ResNet-50", "vit": "ViT-B/16"}[model] if not args.dry_run else f"tiny {model}"
            report.add({"name": f"train_step/{model}", "value": sing["mean_ms"], "host_value": host["mean_ms"],
                        "statistic": "mean", "target": TRAIN_TARGET, "median_ms": sing["median_ms"],
                        "host_median_ms": host["median_ms"], **common,
                        "description": f"{label} fit step (forward, backward, update), SING(AdamW) vs AdamW"})
            report.add({"name": f"first_step/{model}", "value": sing["first_step_ms"], "host_value": host["first_step_ms"],
                        "statistic": "one step", "target": FIRST_STEP_TARGET, **common,
                        "description": f"{label} first fit step (trace, compile, run), SING(AdamW) vs AdamW"})
    finally:
        keras.mixed_precision.set_global_policy("float32")


def run_memory(args, report, bench):
    """Each (what, name, optimizer) in a fresh process: JAX's peak_bytes_in_use
    counts from the process's start."""
    jobs = [("step", p) for p in args.param_sets if "step" in args.memory]
    jobs += [("train", m) for m in args.models if "train" in args.memory]
    for what, name in jobs:
        peaks = {}
        for opt in ("host", "sing"):
            spec = json.dumps({"what": what, "name": name, "opt": opt})
            cmd = [sys.executable, "-u", str(HERE / "gpu_suite.py"), "--backend", args.backend, "--out", args.out,
                   "--memory-child", spec, *(["--dry-run"] if args.dry_run else []),
                   "--train-batch-size", str(args.train_batch_size), "--train-image-size", str(args.train_image_size)]
            env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")]
            if proc.returncode != 0 or not lines:
                sys.stdout.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                raise RuntimeError(f"memory child {spec} failed ({proc.returncode})")
            peaks[opt] = json.loads(lines[-1][len("MEMORY "):])
        host, sing = peaks["host"], peaks["sing"]
        bound = host["peak_bytes"] + 4 * host["params"]
        report.add({"name": f"peak_memory/{what}/{name}", "part": "memory", "value": sing["peak_bytes"],
                    "host_value": host["peak_bytes"], "unit": "bytes", "statistic": host["source"],
                    "target": round(bound / host["peak_bytes"], 4), "bound_bytes": bound, "params": host["params"],
                    "description": f"peak memory, {'optimizer step' if what == 'step' else 'train step'}, SING(AdamW) vs AdamW; "
                                   "target: AdamW's peak + one float32 copy of the weights, as a ratio to AdamW's peak"})


def memory_child(args, bench):
    """Build, run 3 steps, print the peak. Runs in its own process."""
    import keras
    import numpy as np

    import keras_sing

    spec = json.loads(args.memory_child)
    if not args.dry_run:
        bench.require_gpu()
    if bench.BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def make_opt():
        host = keras.optimizers.AdamW(1e-3, weight_decay=1e-2)
        return host if spec["opt"] == "host" else keras_sing.SING(host)

    if spec["what"] == "step":
        shapes = bench.parameter_shapes(spec["name"], args.dry_run)
        rng = np.random.default_rng(0)
        variables = [keras.Variable(rng.standard_normal(s).astype("float32") * 0.02) for s in shapes]
        grads = [keras.ops.convert_to_tensor(rng.standard_normal(s).astype("float32")) for s in shapes]
        step = bench.step_function(make_opt(), variables, grads)
        for _ in range(3):
            bench.sync(step())
        params = sum(int(np.prod(s)) for s in shapes)
    else:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = bench.build_train_model(spec["name"], args.dry_run, args.train_image_size)
        model.compile(make_opt(), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile="auto")
        n = 3 * args.train_batch_size
        x = np.random.default_rng(0).standard_normal((n, args.train_image_size, args.train_image_size, 3)).astype("float32")
        model.fit(x, np.zeros((n,), "int32"), batch_size=args.train_batch_size, epochs=1, verbose=0)
        bench.sync(model.trainable_variables[0].value)
        params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    peak, source = None, None
    if bench.BACKEND == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            peak, source = stats["peak_bytes_in_use"], "jax peak_bytes_in_use"
    elif bench.BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            peak, source = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    if peak is None:  # a CPU (dry run): the process's peak resident memory
        peak, source = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS (CPU)"
    print("MEMORY " + json.dumps({"peak_bytes": int(peak), "source": source, "params": params}), flush=True)
    return 0


def release_cached_memory(bench):
    """Before a part that starts child processes on the same GPU."""
    import gc

    import keras

    keras.utils.clear_session()
    gc.collect()
    if bench.BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ------------------------------------------------------------------- main --


def main(argv=None):
    args = parse_args(argv)
    if args.backend == "tensorflow":
        print("gpu_suite: TensorFlow cannot be measured on the GPU machine (it has no TensorFlow, and no registry "
              "to install it from); run --backend jax or --backend torch. TensorFlow's CPU numbers are in "
              "docs/performance.md.", file=sys.stderr, flush=True)
        return 2
    if args.backend not in ("jax", "torch"):
        print(f"gpu_suite: unknown backend {args.backend!r}; use jax or torch", file=sys.stderr, flush=True)
        return 2
    current = os.environ.get("KERAS_BACKEND")
    if current and current != args.backend and "keras" in sys.modules:
        sys.exit(f"gpu_suite: Keras is already imported with backend {current}")
    os.environ["KERAS_BACKEND"] = args.backend
    sys.path[:0] = [str(HERE), str(ROOT)]
    import bench_optimizer as bench

    if args.memory_child:
        return memory_child(args, bench)
    name, is_gpu = bench.compute_device()
    if args.dry_run:
        log(f"DRY RUN on {name} ({'a GPU' if is_gpu else 'not a GPU'}): CPU sizes, the numbers are not GPU results")
    else:
        name = bench.require_gpu()
        log(f"{args.backend} on {name}")
    report = Report(args, bench)
    ok = True
    t0 = time.perf_counter()
    for part in args.only:
        log(f"part {part}: start ({time.perf_counter() - t0:.0f} s)")
        release_cached_memory(bench)
        if part == "tests":
            ok = run_tests(args, report) and ok
        else:
            {"optimizer": run_optimizer, "train": run_train, "memory": run_memory}[part](args, report, bench)
        log(f"part {part}: done ({time.perf_counter() - t0:.0f} s)")
    log(f"wrote {report.path} and {report.path.with_suffix('.md').name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
