"""Optimizer-step and train-step cost of SING against its host, side by side.

    KERAS_BACKEND=jax python benchmarks/bench_optimizer.py              # full (GPU-sized)
    KERAS_BACKEND=torch python benchmarks/bench_optimizer.py --short    # CI-sized, CPU

Measures, in one process and one run, on the current backend:
- the optimizer step alone (the update of every variable from given
  gradients) for parameter sets shaped like ViT-B/16 and ResNet-50 (built
  with KerasHub, random init) and a small one, for hosts AdamW, Adam, SGD and
  Lion: host alone, SING(host, lookahead=False), SING(host); median and
  inter-quartile range over many repetitions after warm-up, and the ratio
  SING / host;
- optimizer-state bytes per parameter, host vs SING;
- on JAX, the same math written by hand in `jnp` (the floor), and with
  `--interleave` AdamW and SING(AdamW) timed in turns with that floor, so
  that their ratios hold on a machine whose speed drifts;
- the full train step (forward, backward, update) of a KerasHub ResNet and
  ViT, host vs SING, as an overhead in percent (`--train-size`,
  `--train-image-size`, `--train-batch-size` set their size).
Compiled as a user's training would be: `jax.jit` of `stateless_apply` on
JAX, `tf.function(jit_compile=True)` on TensorFlow, eager on torch (Keras's
default there). Writes JSON and a Markdown table.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sing  # noqa: E402

BACKEND = keras.backend.backend()
TARGETS = {  # SING(AdamW) step / AdamW step (issue: performance)
    ("jax", False): 1.3, ("tensorflow", False): 1.3, ("torch", False): 1.5,
    ("jax", True): 1.5, ("tensorflow", True): 1.5, ("torch", True): 1.7,
}


# ---------------------------------------------------------------- shapes --


def parameter_shapes(name, short):
    """Trainable-variable shapes of a KerasHub model (random init)."""
    import keras_hub

    if name == "vit_b16":
        if short:  # ViT-Ti/16 shape on 64px: the same tensor kinds, CPU-sized
            model = keras_hub.models.ViTBackbone(image_shape=(64, 64, 3), patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768)
        else:
            model = keras_hub.models.ViTBackbone(image_shape=(224, 224, 3), patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)
    elif name == "resnet50":
        filters = [64, 64, 96, 128] if short else [64, 128, 256, 512]
        model = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[7],
            stackwise_num_filters=filters, stackwise_num_blocks=[3, 4, 6, 3],
            stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
            image_shape=(224, 224, 3),
        )
    else:  # small MLP + conv
        return [(3, 3, 3, 32), (32,), (3, 3, 32, 64), (64,), (1024, 256), (256,), (256, 10), (10,)]
    return [tuple(v.shape) for v in model.trainable_variables]


def launch_bound_shapes(name, cap=2):
    """`parameter_shapes(name, True)` with every dim capped at `cap`: the
    tensor count and ranks of the model with too little arithmetic to
    count, so a step's time is its CPU-side cost (what a GPU's launching
    thread pays)."""
    return [tuple(min(d, cap) for d in s) for s in parameter_shapes(name, True)]


def make_optimizer(host_name, variant):
    hosts = {
        "adamw": lambda: keras.optimizers.AdamW(1e-3, weight_decay=1e-2),
        "adam": lambda: keras.optimizers.Adam(1e-3),
        "sgd": lambda: keras.optimizers.SGD(1e-2, momentum=0.9),
        "lion": lambda: keras.optimizers.Lion(1e-4),
    }
    host = hosts[host_name]()
    if variant == "host":
        return host
    return keras_sing.SING(host, lookahead=(variant == "sing"))


# ---------------------------------------------------------------- timing --


def sync(x):
    if BACKEND == "jax":
        import jax

        jax.block_until_ready(x)
    elif BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    else:
        keras.ops.convert_to_numpy(keras.ops.sum(x[0] if isinstance(x, (list, tuple)) else x))


def step_function(opt, variables, grads):
    """A zero-argument callable running one optimizer step as users would."""
    opt.build(variables)
    if BACKEND == "jax":
        import jax

        # Inputs in the outputs' order, as in Keras's JAX trainer: jax.jit
        # pairs donated inputs with outputs by shape, in order, and a pair
        # that is not the same variable costs XLA a copy of both buffers.
        def apply(train, opt_vars, g):
            return opt.stateless_apply(opt_vars, g, train)

        step = jax.jit(apply, donate_argnums=(0, 1))
        state = {"opt": [v.value for v in opt.variables], "train": [v.value for v in variables]}

        def run():
            state["train"], state["opt"] = step(state["train"], state["opt"], grads)
            return state["train"]

        return run
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(g):
            opt.apply(g, variables)
            return variables[0].value

        return lambda: step(grads)
    import torch

    def run():
        with torch.no_grad():
            opt.apply(grads, variables)
        return variables[0].value

    return run


def time_interleaved(fns, warmup, reps):
    """Median, mean and inter-quartile range (ms) of each step in `fns`,
    timed in turns: each repetition times every step once (in a rotating
    order), so that a machine whose speed drifts (a shared CPU) moves all
    of them alike and their ratios hold. Returns `{name: dict}`."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            sync(fns[name]())
    times = {name: [] for name in names}
    for rep in range(reps):
        for i in range(len(names)):
            name = names[(rep + i) % len(names)]
            t0 = time.perf_counter()
            sync(fns[name]())
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        q = np.percentile(ts, [25, 50, 75])
        # The mean is the cost per step amortized over LookAhead's k-step
        # cycle (its sync runs once in k steps, which the median does not see).
        out[name] = {"median_ms": 1e3 * q[1], "mean_ms": 1e3 * float(np.mean(ts)), "iqr_ms": 1e3 * (q[2] - q[0])}
    return out


def time_it(fn, warmup, reps):
    """`time_interleaved` for one step."""
    return time_interleaved({"step": fn}, warmup, reps)["step"]


def itemsize(dtype):
    dtype = keras.backend.standardize_dtype(dtype)
    return {"bfloat16": 2}.get(dtype) or np.dtype(dtype).itemsize


def optimizer_step_bench(param_set, shapes, hosts, warmup, reps, seed=0, dtype="float32",
                         variants=("host", "sing_no_lookahead", "sing")):
    """`dtype`: of the variables and gradients (float32, bfloat16)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype("float32") * 0.02 for s in shapes]
    grads = [keras.ops.cast(keras.ops.convert_to_tensor(rng.standard_normal(s).astype("float32")), dtype) for s in shapes]
    n_params = int(sum(np.prod(s) for s in shapes))
    rows = []
    for host in hosts:
        results = {}
        for variant in variants:
            keras.utils.clear_session()
            variables = [keras.Variable(a, dtype=dtype) for a in init]
            opt = make_optimizer(host, variant)
            fn = step_function(opt, variables, grads)
            results[variant] = time_it(fn, warmup, reps)
            state_bytes = sum(int(np.prod(v.shape)) * itemsize(v.dtype) for v in opt.variables)
            results[variant]["state_bytes_per_param"] = state_bytes / n_params
            del fn, variables, opt
        base = results["host"]
        for variant, r in results.items():
            rows.append({
                "param_set": param_set, "params": n_params, "tensors": len(shapes), "host": host, "dtype": dtype,
                "variant": variant, **{k: round(v, 4) for k, v in r.items()},
                "ratio_vs_host": round(r["median_ms"] / base["median_ms"], 3),
                "mean_ratio_vs_host": round(r["mean_ms"] / base["mean_ms"], 3),
            })
    return rows


def jnp_floor_functions(shapes, seed=0):
    """JAX only: the same math as one hand-written `jax.jit` function of
    `jnp` ops (no Keras, no checks, no norm recording), AdamW vs SING(AdamW)
    without and with LookAhead: what this device charges for the arithmetic
    itself, to tell it apart from what keras_sing's implementation adds.
    Returns `{variant: zero-argument step}`."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    grads = [jnp.asarray(rng.standard_normal(s).astype("float32")) for s in shapes]
    lr, wd, b1, b2, eps, beta, k, alpha = 1e-3, 1e-2, 0.9, 0.999, 1e-8, 50.0, 5, 0.5

    # The gradients are arguments of the jitted step, as in Keras's step
    # (`step_function`): captured by the closures, XLA would fold every
    # function of them (SING's statistics, g * (1 - b1), g^2) into
    # constants at compile time.
    def adamw(state, t, grads):
        out = []
        for (w, m, v, s), g in zip(state, grads, strict=True):
            w = w * (1 - lr * wd)
            m, v = m + (g - m) * (1 - b1), v + (g * g - v) * (1 - b2)
            step = lr * jnp.sqrt(1 - b2**t) / (1 - b1**t)
            out.append((w - step * m / (jnp.sqrt(v) + 1e-7), m, v, s))
        return out

    def sing(lookahead):
        def step_fn(state, t, grads):
            out = []
            for (w, m, v, s), g in zip(state, grads, strict=True):
                # LookAhead's seed (s = w at t = 1): the slow copies start at
                # the weights (zeros here), as SING's do when it is built,
                # so the floor needs no per-step select for it
                if g.ndim > 1:
                    g = g - jnp.mean(g, axis=tuple(range(g.ndim - 1)), keepdims=True)
                    w = w * (1 - lr * wd)
                g = g / (jnp.sqrt(jnp.sum(g * g)) + eps)
                m, v = m * b1 + g * (1 - b1), v * b2 + g * g * (1 - b2)
                d = jax.nn.softplus(beta * jnp.sqrt(v / (1 - b2**t))) / beta
                w = w - lr / (1 - b1**t) * m / d
                if lookahead:  # a cond: per-element masks are ~2x slower on CPU
                    w, s = jax.lax.cond(t % k == 0, lambda w, s: (s + alpha * (w - s),) * 2, lambda w, s: (w, s), w, s)
                out.append((w, m, v, s))
            return out

        return step_fn

    def runner(fn):
        step = jax.jit(fn, donate_argnums=0)
        state = {"s": [tuple(jnp.zeros(s) for _ in range(4)) for s in shapes], "t": 0}

        def run():
            state["t"] += 1
            state["s"] = step(state["s"], jnp.float32(state["t"]), grads)
            return state["s"]

        return run

    return {"jnp_adamw": runner(adamw), "jnp_sing_no_lookahead": runner(sing(False)), "jnp_sing": runner(sing(True))}


def jnp_floor_bench(param_set, shapes, warmup, reps, seed=0):
    """The `jnp_floor_functions`, timed one after the other."""
    rows = [{"param_set": param_set, "variant": variant, **time_it(run, warmup, reps)}
            for variant, run in jnp_floor_functions(shapes, seed).items()]
    for r in rows:
        r["ratio_vs_host"] = round(r["median_ms"] / rows[0]["median_ms"], 3)
        r["mean_ratio_vs_host"] = round(r["mean_ms"] / rows[0]["mean_ms"], 3)
    return rows


def floor_comparison(param_set, shapes, warmup, reps, seed=0):
    """JAX only: Keras AdamW and SING(AdamW), with and without LookAhead,
    timed in turns with the `jnp` floor of the same math
    (`time_interleaved`). Rows carry `ratio_vs_floor`: each Keras step over
    its floor (AdamW over `jnp_adamw`, SING over `jnp_sing`, SING without
    LookAhead over `jnp_sing_no_lookahead`), on the median and the mean."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype("float32") * 0.02 for s in shapes]
    grads = [keras.ops.convert_to_tensor(rng.standard_normal(s).astype("float32")) for s in shapes]
    fns = {}
    for variant in ("host", "sing_no_lookahead", "sing"):
        variables = [keras.Variable(a) for a in init]
        fns[variant] = step_function(make_optimizer("adamw", variant), variables, grads)
    fns.update(jnp_floor_functions(shapes, seed))
    timed = time_interleaved(fns, warmup, reps)
    floor_of = {"host": "jnp_adamw", "sing_no_lookahead": "jnp_sing_no_lookahead", "sing": "jnp_sing"}
    rows = []
    for variant, floor in floor_of.items():
        r, f = timed[variant], timed[floor]
        rows.append({"param_set": param_set, "variant": variant, "floor": floor,
                     **{k: round(v, 4) for k, v in r.items()},
                     **{f"floor_{k}": round(v, 4) for k, v in f.items()},
                     "ratio_vs_floor": round(r["median_ms"] / f["median_ms"], 3),
                     "mean_ratio_vs_floor": round(r["mean_ms"] / f["mean_ms"], 3)})
    return rows


def build_train_model(model_name, short, size):
    """A KerasHub ResNet or ViT backbone with a 10-way head (random init).
    `short`: a 2-block ResNet / 2-layer ViT (CPU); else ResNet-50 and
    ViT-B/16."""
    import keras_hub

    if model_name == "vit":
        bb = keras_hub.models.ViTBackbone(image_shape=(size, size, 3), patch_size=8 if short else 16, num_layers=2 if short else 12, num_heads=2 if short else 12, hidden_dim=64 if short else 768, mlp_dim=128 if short else 3072)
        out = keras.layers.Dense(10)(bb.output[:, 0])
    else:
        filters = [64, 64] if short else [64, 128, 256, 512]
        blocks = [1, 1] if short else [3, 4, 6, 3]
        bb = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[7 if not short else 3],
            stackwise_num_filters=filters, stackwise_num_blocks=blocks,
            stackwise_num_strides=[1] + [2] * (len(filters) - 1),
            block_type="basic_block" if short else "bottleneck_block", image_shape=(size, size, 3),
        )
        out = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(bb.output))
    return keras.Model(bb.input, out)


def warm_up_device(model_name, short, size, batch_size):
    """One untimed fit step of the same model with plain SGD, before the
    timed variants: the one-time costs of the process (CUDA context and
    libraries, cuDNN/cuBLAS handles, XLA's GEMM and convolution autotuning)
    are then paid by neither variant. Without it the first variant timed
    (the host) pays them alone: on an H200, torch's first ViT-B/16 step read
    1177 ms for AdamW against 318 ms for SING(AdamW) measured after it."""
    keras.utils.clear_session()
    model = build_train_model(model_name, short, size)
    model.compile(keras.optimizers.SGD(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile="auto")
    x = np.zeros((batch_size, size, size, 3), "float32")
    model.fit(x, np.zeros((batch_size,), "int32"), batch_size=batch_size, epochs=1, verbose=0)


def train_step_bench(model_name, short, warmup, reps, batch_size, image_size=None):
    """Forward + backward + update of a KerasHub model, host vs SING (see
    `build_train_model`). `image_size` defaults to 32 (short) or 224. The
    first step's time (trace, compile and run) is `first_step_ms`, after
    `warm_up_device`; the steady-state statistics are over `reps` steps
    after `warmup`."""
    rows = []
    size = image_size or (32 if short else 224)
    warm_up_device(model_name, short, size, batch_size)
    for variant in ["host", "sing"]:
        keras.utils.clear_session()
        keras.utils.set_random_seed(0)
        model = build_train_model(model_name, short, size)
        host = keras.optimizers.AdamW(1e-3, weight_decay=1e-2)
        opt = host if variant == "host" else keras_sing.SING(host)
        model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile="auto")
        steps = warmup + reps
        x = np.random.default_rng(0).standard_normal((batch_size * steps, size, size, 3)).astype("float32")
        y = np.zeros((batch_size * steps,), "int32")

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times, self.t0 = [], None

            def on_train_batch_begin(self, batch, logs=None):
                self.t0 = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                # The step's loss comes out of the same compiled step as the
                # update, so waiting for it waits for the step. (Reading
                # `self.model` would make Keras's JAX trainer write every
                # model and optimizer variable back, and gather them again
                # at the next step, inside the timed window: more for SING,
                # which has more variables.)
                sync(logs["loss"])
                self.times.append(time.perf_counter() - self.t0)

        timer = Timer()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer])
        times = timer.times[max(warmup, 1):]
        rows.append({"model": model_name, "params": model.count_params(), "variant": variant,
                     "median_ms": round(1e3 * statistics.median(times), 3), "mean_ms": round(1e3 * statistics.fmean(times), 3),
                     "first_step_ms": round(1e3 * timer.times[0], 3), "batch_size": batch_size, "image_size": size})
    base = rows[0]["median_ms"]
    for r in rows:
        r["overhead_pct"] = round(100 * (r["median_ms"] / base - 1), 2)
    return rows


# ---------------------------------------------------------------- report --


def cpu_name():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compute_device():
    """(name, is_gpu): the device this backend computes on, named as the
    framework reports it (the CPU's model name on a CPU)."""
    if BACKEND == "jax":
        import jax

        device = jax.devices()[0]
        return (device.device_kind, True) if device.platform == "gpu" else (cpu_name(), False)
    if BACKEND == "torch":
        import torch

        return (torch.cuda.get_device_name(0), True) if torch.cuda.is_available() else (cpu_name(), False)
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return (gpus[0].name, True) if gpus else (cpu_name(), False)


def require_gpu():
    """Exit unless this backend computes on a GPU (JAX: platform "gpu";
    torch: CUDA available, and Keras puts its variables there)."""
    name, is_gpu = compute_device()
    if BACKEND == "torch" and is_gpu:
        is_gpu = keras.Variable(1.0).value.device.type == "cuda"
    if not is_gpu:
        sys.exit(f"a GPU is required: the {BACKEND} backend computes on {name!r} (on a CPU, use the dry run / --device cpu)")
    return name


def environment(device):
    info = {"backend": BACKEND, "keras": keras.__version__, "keras_sing": keras_sing.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(), "device": device}
    try:
        if BACKEND == "jax":
            import jax

            info["jax"] = jax.__version__
            info["accelerator"] = str(jax.devices()[0])
        elif BACKEND == "torch":
            import torch

            info["torch"] = torch.__version__
            info["accelerator"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        else:
            import tensorflow as tf

            info["tensorflow"] = tf.__version__
            info["accelerator"] = str(tf.config.list_logical_devices()[-1].name)
    except Exception as error:  # informational only
        info["accelerator"] = f"unknown ({error})"
    return info


def markdown(env, step_rows, train_rows, floor_rows=(), interleaved_rows=()):
    lines = [f"### {env['backend']} on {env['accelerator']} (keras {env['keras']}, keras_sing {env['keras_sing']})", ""]
    lines += ["| params | host | variant | median ms | IQR ms | mean ms | state B/param | SING/host (median) | SING/host (mean) | target (on the mean) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in step_rows:
        target = ""
        if r["host"] == "adamw" and r["variant"] != "host":
            t = TARGETS[(env["backend"], r["variant"] == "sing")]
            ratio = r["mean_ratio_vs_host"]
            target = f"<= {t}: {'met' if ratio <= t else 'MISSED by ' + format(ratio / t - 1, '.0%')}"
        lines.append(f"| {r['param_set']} ({r['params'] / 1e6:.2f}M, {r['tensors']} tensors) | {r['host']} | {r['variant']} | "
                     f"{r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {r['mean_ms']:.3f} | {r['state_bytes_per_param']:.1f} | "
                     f"{r['ratio_vs_host']:.2f} | {r['mean_ratio_vs_host']:.2f} | {target} |")
    if train_rows:
        lines += ["", "| model | params | image, batch | variant | train step median ms | overhead |", "|---|---|---|---|---|---|"]
        for r in train_rows:
            lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['image_size']}px, {r['batch_size']} | {r['variant']} | "
                         f"{r['median_ms']:.2f} | {r['overhead_pct']:+.1f}% |")
    if interleaved_rows:
        lines += ["", "Keras steps and their jnp floor, timed in turns (--interleave):", "",
                  "| params | variant | median ms | floor | floor median ms | / floor (median) | / floor (mean) |", "|---|---|---|---|---|---|---|"]
        for r in interleaved_rows:
            lines.append(f"| {r['param_set']} | {r['variant']} | {r['median_ms']:.3f} | {r['floor']} | {r['floor_median_ms']:.3f} | "
                         f"{r['ratio_vs_floor']:.2f} | {r['mean_ratio_vs_floor']:.2f} |")
    if floor_rows:
        lines += ["", "Floor: the same math as one hand-written jax.jit function (no Keras):", "",
                  "| params | variant | median ms | IQR ms | mean ms | / jnp_adamw (median) | / jnp_adamw (mean) |", "|---|---|---|---|---|---|---|"]
        for r in floor_rows:
            lines.append(f"| {r['param_set']} | {r['variant']} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {r['mean_ms']:.3f} | "
                         f"{r['ratio_vs_host']:.2f} | {r['mean_ratio_vs_host']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CPU/CI-sized parameter sets and few repetitions")
    parser.add_argument("--device", choices=["cpu", "gpu"], default=None, help="default: whatever the backend picks")
    parser.add_argument("--hosts", default="adamw,adam,sgd,lion")
    parser.add_argument("--param-sets", default="small,vit_b16,resnet50")
    parser.add_argument("--train-models", default="resnet,vit", help="'' to skip the train-step bench")
    parser.add_argument("--train-size", choices=["tiny", "full"], default=None,
                        help="train-step models: 'tiny' (2 blocks, the --short default) or 'full' (ResNet-50, ViT-B/16)")
    parser.add_argument("--train-image-size", type=int, default=None, help="default: 32 for tiny, 224 for full")
    parser.add_argument("--train-batch-size", type=int, default=None, help="default: 8 for tiny, 64 for full")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--interleave", action="store_true",
                        help="JAX: also time AdamW and SING(AdamW) in turns with the jnp floor (robust ratios on a shared CPU)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.device == "cpu" and BACKEND == "jax":
        import jax

        jax.config.update("jax_platforms", "cpu")
    if args.device == "gpu":
        require_gpu()
    reps = args.reps or (5 if args.short else 50)
    warmup = 2 if args.short else 5
    env = environment(args.device or "default")
    print(json.dumps(env))
    step_rows, floor_rows, interleaved_rows = [], [], []
    for param_set in [p for p in args.param_sets.split(",") if p]:
        shapes = parameter_shapes(param_set, args.short)
        step_rows += optimizer_step_bench(param_set, shapes, args.hosts.split(","), warmup, reps)
        print(markdown(env, [r for r in step_rows if r["param_set"] == param_set], []), flush=True)
        if BACKEND == "jax":
            floor_rows += jnp_floor_bench(param_set, shapes, warmup, reps)
            if args.interleave:
                interleaved_rows += floor_comparison(param_set, shapes, warmup, reps)
    train_rows = []
    for model_name in [m for m in args.train_models.split(",") if m]:
        tiny = (args.train_size or ("tiny" if args.short else "full")) == "tiny"
        train_rows += train_step_bench(model_name, tiny, warmup, reps, args.train_batch_size or (8 if tiny else 64), args.train_image_size)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{BACKEND}_{'short' if args.short else 'full'}"
    (out / f"{stem}.json").write_text(json.dumps({"environment": env, "optimizer_step": step_rows, "train_step": train_rows, "jnp_floor": floor_rows,
                                                       "interleaved": interleaved_rows}, indent=1))
    table = markdown(env, step_rows, train_rows, floor_rows, interleaved_rows)
    (out / f"{stem}.md").write_text(table)
    print(table)
    print(f"wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
