"""What the examples share: backend default, optimizers, schedules, logging,
the AdamW-vs-SING table, JSON metrics and the PNG plot.

Every example sets `KERAS_BACKEND` to `jax` unless it is already set, so
import this module before `keras`.
"""

import argparse
import json
import os
import pathlib
import platform
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sing  # noqa: E402

# The recommended settings: SING at ~10x AdamW's learning rate and ~10x lower
# weight decay (the paper's advice), both with warm-up + cosine decay.
DEFAULTS = {
    "adamw": {"learning_rate": 1e-3, "weight_decay": 0.05},
    "sing": {"learning_rate": 1e-2, "weight_decay": 0.005},
}


def base_parser(description, out_dir, epochs, batch_size, learning_rates="1e-3 for AdamW, 1e-2 for SING"):
    """The options every example takes; `epochs` and `batch_size` are the
    example's defaults, applied by `apply_defaults` (None until then, so
    that `--smoke` can tell a value the user gave)."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--optimizer", choices=["adamw", "sing"], default="sing", help="the optimizer of a single run")
    parser.add_argument("--compare", action="store_true", help="train AdamW and SING at their recommended learning rates and weight decays on the same data and seed, and print a table (--learning-rate and --weight-decay are not used)")
    parser.add_argument("--learning-rate", type=float, default=None, help=f"peak learning rate; default: {learning_rates}")
    parser.add_argument("--weight-decay", type=float, default=None, help="default: 0.05 for AdamW, 0.005 for SING")
    parser.add_argument("--epochs", type=int, default=None, help=f"default: {epochs} (--smoke: 1)")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default: {batch_size}")
    parser.add_argument("--seed", type=int, default=0, help="weights, data order and generated data")
    parser.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto", help="Keras's jit_compile")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (< 1 min on CPU) for CI: small data and model, whatever --depth or --size say (a named --preset is kept)")
    parser.add_argument("--out", default=out_dir, help="where metrics.json and curves.png go")
    parser.add_argument("--verbose", type=int, default=1, help="Keras progress bar: 0, 1 or 2")
    return parser


def apply_defaults(args, epochs, batch_size):
    """The example's epochs and batch size where the user gave none, and a
    warning where --compare leaves a given learning rate or decay unused."""
    args.epochs = args.epochs or epochs
    args.batch_size = args.batch_size or batch_size
    if args.compare and (args.learning_rate is not None or args.weight_decay is not None):
        print("note: --compare trains each optimizer at its recommended learning rate and weight "
              "decay; --learning-rate and --weight-decay are not used")


def jit_flag(value):
    return {"true": True, "false": False}.get(str(value).lower(), "auto")


def make_optimizer(name, learning_rate, weight_decay, total_steps, **sing_kwargs):
    """AdamW or SING(AdamW), both with 5% linear warm-up then cosine decay."""
    warmup = max(1, int(0.05 * total_steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, total_steps - warmup),
        warmup_target=learning_rate,
        warmup_steps=warmup,
    )
    host = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    if name == "adamw":
        return host
    return keras_sing.SING(host, **sing_kwargs)


def resolve(args, name):
    lr = args.learning_rate if args.learning_rate is not None and not args.compare else DEFAULTS[name]["learning_rate"]
    wd = args.weight_decay if args.weight_decay is not None and not args.compare else DEFAULTS[name]["weight_decay"]
    return lr, wd


class BatchLoss(keras.callbacks.Callback):
    """Records every batch's own loss (loss spikes hide in epoch means).

    Keras reports the running mean of the loss over the epoch, weighted by
    batch size; each batch's own loss is recovered from two consecutive
    means: `(seen_b * m_b - seen_{b-1} * m_{b-1}) / size_b`."""

    def __init__(self, num_samples, batch_size):
        super().__init__()
        self.num_samples, self.batch_size = num_samples, batch_size
        self.losses = []
        self.start = None
        self.seconds = 0.0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._seen, self._total = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs:
            size = min(self.batch_size, self.num_samples - self._seen)
            self._seen += size
            total = float(logs["loss"]) * self._seen
            self.losses.append((total - self._total) / size)
            self._total = total

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def spike_count(losses, factor=2.0, window=20, floor=0.02):
    """Loss spikes in per-batch losses, as the study defines them
    (`benchmarks/rde_study.py`, `loss_spikes`): a batch `t >= window` whose
    loss exceeds `factor` x the median of the `window` batches before it,
    and that median by more than `floor` x the initial loss (the median of
    the first `window` batches); consecutive spiking batches count once.
    Losses after the first non-finite one are not counted (divergence)."""
    values = np.asarray(losses, dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    values = values[: bad[0]] if len(bad) else values
    if len(values) <= window:
        return 0
    min_jump = floor * float(np.median(values[:window]))
    spikes, in_spike = 0, False
    for t in range(window, len(values)):
        baseline = float(np.median(values[t - window : t]))
        spiking = values[t] > factor * baseline and values[t] - baseline > min_jump
        spikes += spiking and not in_spike
        in_spike = spiking
    return int(spikes)


def compile_and_fit(name, model, args, train, validation, total_steps, metric, metric_key, lr=None, wd=None, **sing_kwargs):
    """Compiles `model` with AdamW or SING(AdamW) (warm-up + cosine), fits it
    with per-batch loss recording and returns the run's summary."""
    default_lr, default_wd = resolve(args, name)
    lr = default_lr if lr is None else lr
    wd = default_wd if wd is None else wd
    model.compile(
        optimizer=make_optimizer(name, lr, wd, total_steps, **sing_kwargs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[metric],
        jit_compile=jit_flag(args.jit_compile),
    )
    print(f"\n== {name}: lr {lr:g}, weight decay {wd:g}, {model.count_params():,} parameters")
    batch_loss = BatchLoss(len(train[1]), args.batch_size)
    history = model.fit(
        *train, validation_data=validation, batch_size=args.batch_size,
        epochs=args.epochs, callbacks=[batch_loss], verbose=args.verbose,
    )
    return summarize(name, lr, wd, history, batch_loss, metric_key)


def summarize(name, lr, wd, history, batch_loss, metric_key):
    h = history.history
    return {
        "optimizer": name,
        "learning_rate": lr,
        "weight_decay": wd,
        "final_train_loss": h["loss"][-1],
        f"final_val_{metric_key}": h.get(f"val_{metric_key}", [float("nan")])[-1],
        f"best_val_{metric_key}": max(h.get(f"val_{metric_key}", [float("nan")])),
        "loss_spikes": spike_count(batch_loss.losses),
        "nan_loss": bool(not np.all(np.isfinite(h["loss"]))),
        "train_seconds": round(batch_loss.seconds, 1),
        "epochs": len(h["loss"]),
        "history": {k: [float(v) for v in vals] for k, vals in h.items()},
        "batch_loss": batch_loss.losses,
    }


def print_table(results, metric_key):
    cols = ["optimizer", "learning_rate", "weight_decay", "final_train_loss", f"final_val_{metric_key}", f"best_val_{metric_key}", "loss_spikes", "train_seconds"]
    widths = [max(len(c), 12) for c in cols]
    print()
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in results:
        cells = []
        for c, w in zip(cols, widths, strict=True):
            v = r[c]
            cells.append((f"{v:.4g}" if isinstance(v, float) else str(v)).ljust(w))
        print(" | ".join(cells))
    print()


def _version_of(package):
    try:
        from importlib.metadata import version

        return version(package.replace("_", "-"))
    except Exception:
        return None


def _processor():
    """The CPU's model name (Linux), else what `platform` says."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_outputs(out_dir, results, metric_key, config):
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": config,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "keras_hub": _version_of("keras_hub"),
        "keras_sing": keras_sing.__version__,
        "machine": {"platform": platform.platform(), "processor": _processor(), "cpu_count": os.cpu_count()},
        "results": results,
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=1))
    plot_curves(out / "curves.png", results, metric_key)
    print(f"wrote {out / 'metrics.json'} and {out / 'curves.png'}")


def plot_curves(path, results, metric_key):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        label = f"{r['optimizer']} (lr {r['learning_rate']:g})"
        axes[0].plot(r["batch_loss"], label=label, linewidth=1)
        val = r["history"].get(f"val_{metric_key}")
        if val:
            axes[1].plot(range(1, len(val) + 1), val, marker="o", label=label)
    axes[0].set_xlabel("batch")
    axes[0].set_ylabel("training loss, per batch")
    axes[0].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel(f"validation {metric_key}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
