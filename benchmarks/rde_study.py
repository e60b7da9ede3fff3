"""When does SING beat AdamW? A reproducible study on RDE-like depth (issue 12).

For each optimizer configuration x learning rate x seed, trains a ViT
(KerasHub `ViTBackbone`, random init, per-patch linear decoder, as in
`examples/vit_depth_rde.py`) to predict per-pixel depth on RDE-like data
(`keras_sing.datasets.rde`) and writes one JSON per run. The paper's setting
(Courtois et al., arXiv 2305.15997): ViT-S, 50K 128x128 images, MSE loss on
depth, 100 epochs, batch 512, 5% linear warm-up then cosine.
`benchmarks/rde_report.py` turns the JSONs into `docs/results.md`.

Commands (the backend is JAX unless `KERAS_BACKEND` says otherwise):

    python benchmarks/rde_study.py --scale smoke                  # CI, ~1 min
    python benchmarks/rde_study.py --scale cpu --dry-run          # the plan
    python benchmarks/rde_study.py --scale cpu --max-minutes 110  # resumable
    python benchmarks/rde_study.py --scale gpu --max-minutes 9    # repeat
    python benchmarks/rde_study.py --scale paper                  # ~1 GPU-day
    python benchmarks/rde_report.py --scale cpu

Resumable: each run writes `<out>/<config slug>_lr<lr>_wd<wd>_seed<s>.json`
(default `<out>` is `docs/results/rde_study/<scale>/`; `_ce` and `_<size>`
are appended for `--loss ce` and a `--size` other than the scale's). A run
whose JSON exists with identical `settings` is skipped; one whose JSON
exists with other settings is refused (listed as a conflict) unless
`--overwrite`. `--max-minutes` stops before a run that would not finish in
the budget, so the cpu scale can be completed over several sessions.

What every run records (see `RUN_DEFINITIONS`, also written in each JSON):

- per-step training loss, every batch. Keras logs the running mean of the
  epoch; the per-step loss is recovered exactly from it (the running mean
  is a batch-size-weighted mean, so step i's loss is
  `(mean_i * seen_i - mean_{i-1} * seen_{i-1}) / batch_i`).
- loss spikes: step t is a spike if its loss is above `SPIKE_FACTOR` (2x)
  the median of the `WINDOW` (20) steps before it and above it by more than
  `FLOOR` (2%) of the initial loss level (the median of the first `WINDOW`
  steps), so that noise around a loss near 0 is not counted. Consecutive
  spiking steps are one spike; the first `WINDOW` steps are never spikes;
  a non-finite loss is divergence, not a spike. (The examples'
  `spike_count` counts with the same definition.)
- divergence: the run diverged if a loss is NaN or infinite (training stops
  there), or if the loss does not recover: the median of the last
  `max(WINDOW, 10% of the steps)` steps is above `UNRECOVERED_FACTOR` (1.5x)
  the lowest `WINDOW`-step running median reached before them, and above it
  by more than `FLOOR` of the initial loss (its step: where the running
  median last crossed above `UNRECOVERED_FACTOR` x that lowest). Runs
  shorter than `2 * WINDOW` steps are judged on non-finite losses only.
- stuck (recorded, not divergence): the final loss (same tail median) is at
  least 90% of the best constant predictor's loss (MSE: the variance of the
  training depths; CE: the entropy of their distribution): the model learned
  no more than the label statistics.
- validation pixel accuracy per epoch. MSE: the prediction rounded to the
  nearest integer (ties to even), clipped to [0, num_rectangles], equal to
  the integer depth; CE: argmax of the class logits equal to the depth.
  Final (last epoch; a run stopped by a NaN is evaluated on its last
  weights) and best over epochs.
- skipped steps (SING configurations: steps whose gradients held a NaN or
  an inf, skipped whole by `on_nonfinite="skip"`), wall time, fit time,
  time per step after the first epoch, parameter count.
- the seed, all settings, the git commit (`git rev-parse HEAD`) and whether
  the code (`keras_sing/`, this file) differs from it, backend and versions.

Configurations (`CONFIGS`; names are stable; in file names `(` becomes
`_`, `)` is dropped, `+` becomes `_plus_` and `-` `_minus_`):

- table1: `adamw`, `sing` (SING(AdamW): the paper's full recipe).
- ablation (paper Table 2, both directions): `adamw+norm`, `adamw+central`,
  `adamw+lookahead`, `adamw+softplus` (AdamW plus one part of SING), and
  `sing-norm`, `sing-central`, `sing-lookahead`, `sing-softplus` (SING minus
  one part). All are `SING(AdamW, centralize=, normalize=, lookahead=,
  softplus=)` with the parts switched by SING's own arguments. The
  `adamw+...` rows use `weight_decay_mode="host"` (the same variables decay
  as in plain AdamW: only the part differs); SING and `sing-...` use
  SING's default `"paper"` (ndim > 1 only).
- hosts (paper Table 3): `sgd` / `sing(sgd)` (SGD, momentum 0.9), `adam` /
  `sing(adam)` (Keras `Adam` without weight decay: Keras's Adam would apply
  the same decoupled decay as AdamW), `adafactor` / `sing(adafactor)`,
  `lion` / `sing(lion)`. SING with a non-Adam host standardizes the
  gradient, runs the host's own update on it and adds LookAhead (softplus
  is Adam-only). Keras has no AdaBelief, so the paper's AdaBelief row
  (60.26% -> 96.70%) is not run.

Learning-rate grids (`--lrs` overrides): AdamW-like hosts {5e-4, 1e-3, 5e-3,
1e-2} (the paper's AdamW grid), SING configurations {5e-3, 1e-2, 5e-2, 1e-1}
(the paper's SING grid), `adamw+...` rows {1e-3, 5e-3, 1e-2, 5e-2} (from
AdamW's best to SING's best: does one part move the stable range?), SGD
{1e-2, 3e-2, 1e-1, 3e-1}, SING(SGD) {3e-2, 1e-1, 3e-1, 1} (its step is the
unit-norm gradient, ~lr/sqrt(n) per weight), Adafactor and SING(Adafactor)
{3e-3, 1e-2, 3e-2, 1e-1} (Adafactor scales its step by the weights' RMS),
Lion {1e-4, 3e-4, 1e-3, 3e-3}, SING(Lion) {3e-4, 1e-3, 3e-3, 1e-2}. The
paper extends a grid when the best sits at an edge: `--extend N` does that
(2N more lrs at most in all, each one step past the edge where the best
stable lr sits, on the grid's own ladder: all 2N can go to one side).

Weight decay (decoupled, `--weight-decay` overrides): the examples'
defaults, 0.05 for configurations without SING (and the `adamw+...` rows,
which are AdamW plus one part) and 0.005 for SING and `sing-...` /
`sing(host)`; `adam` and `sing(adam)` have none (see above); `sgd` and
`sing(sgd)` 5e-4, since Keras multiplies the decay by the lr, which is
~100x larger with SGD. The paper tunes weight decay after the lr over
{5e-4, 5e-3, 5e-2, 5e-1}: run that as a second pass with `--lrs <best>
--weight-decay <wd>` per value (the weight decay is in the file name).

Scales (`SCALES`; all use 5% linear warm-up then cosine decay to 0):

- smoke: tiny ViT, 16px, 64 train images, 1 epoch, `adamw` and `sing` at
  one lr each, 1 seed: seconds per backend on CPU (CI).
- cpu: tiny ViT (4 layers, 64 wide, patch 4), 32px, 5 rectangles, 2,048
  train / 512 val images, 6 epochs of batch 32 (384 steps); table1 with 3
  seeds per lr (24 runs), ablation and hosts with 1 seed (64 runs): 88 runs.
  Calibrated by timing two runs of this scale on the 2-core development
  CPU (JAX, machine shared with other jobs): SING at lr 1e-2 took 67 s wall
  (first epoch, with compilation, 21 s; then 0.12 s per step), AdamW 63 s
  (13 s; 0.16 s per step). The estimate, 20 s + 384 x 0.13 s = ~70 s per
  run, gives 88 x 70 s = ~103 minutes, ~2 hours with the process start and
  slack; `--dry-run` prints it (from the median wall time of the runs
  already present once there are some).
- gpu: ViT-S (12 layers, 384 wide, patch 8), 64px, 6 rectangles, 16,384
  train / 2,048 val images, 15 epochs of batch 256 (960 steps); table1 (4
  lrs x 2 seeds) and ablation (8 configs x 2 lrs: each's own grid's 2nd
  and 4th, 1 seed). 32 runs, ~20 minutes on one H100 by an estimate, not a
  measurement (no GPU run was made for this file): ~2 TFLOP per step, ~25 ms
  per step plus ~15 s of compilation per run. Run it as repeated commands
  under `--max-minutes 9` on a machine with a 10-minute limit per command
  (Keras and KerasHub installed; benchmarks/README.md has the offline
  install for the GPU machine).
- paper: ViT-S (patch 16), 128px, 8 rectangles, 50,000 train / 5,000 val
  images, 100 epochs of batch 512 (9,800 steps), every configuration, the
  full grids, 3 seeds for table1, `--extend 1`: 88 runs (+ extensions),
  ~25 GPU-hours on one H100 by an estimate (~0.1 s per step, ~17 minutes
  per run; not measured). The data take ~13 GB of host memory.

Everything is generated on the fly: this script never uses a network.
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
# this checkout's keras_sing, not another one installed in the environment
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RESULTS = REPO / "docs" / "results" / "rde_study"
SCHEMA = "keras_sing.rde_study/1"

# --------------------------------------------------------------------------
# Spikes, divergence, stuck: the definitions, on a list of per-step losses.
# --------------------------------------------------------------------------

WINDOW = 20
SPIKE_FACTOR = 2.0
UNRECOVERED_FACTOR = 1.5
FLOOR = 0.02
STUCK_FRACTION = 0.9

RUN_DEFINITIONS = {
    "step_loss": "the training loss of each batch, recovered from Keras's "
    "running epoch mean: (mean_i * seen_i - mean_{i-1} * seen_{i-1}) / batch_i",
    "spike": f"step t (t >= {WINDOW}) with loss > {SPIKE_FACTOR} x the median "
    f"of the {WINDOW} steps before it and above that median by more than "
    f"{FLOOR} x the initial loss (median of the first {WINDOW} steps); "
    "consecutive spiking steps count as one spike; non-finite losses are "
    "divergence, not spikes",
    "divergence": "a NaN or infinite loss (training stops), or a loss that "
    f"does not recover: the median of the last max({WINDOW}, 10% of the "
    f"steps) steps > {UNRECOVERED_FACTOR} x the lowest {WINDOW}-step running "
    f"median before them and above it by more than {FLOOR} x the initial "
    f"loss (runs under {2 * WINDOW} steps: non-finite losses only)",
    "stuck": f"not divergence: the final loss (same tail median) >= "
    f"{STUCK_FRACTION} x the best constant predictor's loss (MSE: variance "
    "of the training depths; CE: entropy of their distribution)",
    "pixel_accuracy": "MSE: round(prediction) (ties to even), clipped to "
    "[0, num_rectangles], equal to the integer depth; CE: argmax of the "
    "logits equal to the depth; mean over the validation pixels",
    "best_stable_lr": "the lr with the highest mean final val accuracy among "
    "the lrs where no seed diverged (a tie goes to the smaller lr); its runs "
    "may be stuck: the stuck column of Every setting says so",
}


def finite_losses_prefix(losses):
    """The losses before the first non-finite one, as a float array."""
    values = np.asarray([np.nan if v is None else v for v in losses], dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    return values[: bad[0]] if len(bad) else values


def initial_loss_level(losses, window=WINDOW):
    """The median of the first `window` finite losses (the loss scale the
    floors are relative to)."""
    values = finite_losses_prefix(losses)
    return float(np.median(values[:window])) if len(values) else float("nan")


def loss_spikes(losses, factor=SPIKE_FACTOR, window=WINDOW, floor=FLOOR):
    """Indices of the steps that start a loss spike (definition above and in
    `RUN_DEFINITIONS["spike"]`)."""
    values = finite_losses_prefix(losses)
    if len(values) <= window:
        return []
    min_jump = floor * initial_loss_level(values, window)
    spikes, in_spike = [], False
    for t in range(window, len(values)):
        baseline = float(np.median(values[t - window : t]))
        spiking = values[t] > factor * baseline and values[t] - baseline > min_jump
        if spiking and not in_spike:
            spikes.append(t)
        in_spike = spiking
    return spikes


def tail_length(num_steps, window=WINDOW):
    """How many final steps the final loss is the median of."""
    return max(window, num_steps // 10)


def final_loss(losses, window=WINDOW):
    """The median of the last `tail_length` losses (NaN if any is not
    finite)."""
    values = np.asarray([np.nan if v is None else v for v in losses], dtype=float)
    if not len(values):
        return float("nan")
    tail = values[-tail_length(len(values), window) :]
    return float(np.median(tail)) if np.all(np.isfinite(tail)) else float("nan")


def running_medians(values, window=WINDOW):
    """The median of every `window` consecutive values (index: the first)."""
    return np.array([np.median(values[i : i + window]) for i in range(len(values) - window + 1)])


def divergence(losses, factor=UNRECOVERED_FACTOR, window=WINDOW, floor=FLOOR):
    """`(reason, step)`: `("nonfinite", first bad step)`, `("unrecovered",
    the step where the running median crossed above the threshold for the
    last time)` or `(None, None)` (definition above and in
    `RUN_DEFINITIONS["divergence"]`)."""
    values = np.asarray([np.nan if v is None else v for v in losses], dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        return "nonfinite", int(bad[0])
    if len(values) < 2 * window:
        return None, None
    tail = tail_length(len(values), window)
    head = values[:-tail]
    if len(head) < window:
        return None, None
    lowest = float(running_medians(head, window).min())
    last = float(np.median(values[-tail:]))
    threshold = factor * lowest
    if last > threshold and last - lowest > floor * initial_loss_level(values, window):
        below = np.flatnonzero(running_medians(values, window) <= threshold)
        return "unrecovered", int(below[-1] + window // 2 + 1)
    return None, None


def is_stuck(losses, constant_predictor_loss, fraction=STUCK_FRACTION):
    """Whether the final loss is no better than `fraction` x the best
    constant predictor's (a diverged run with NaN losses is not 'stuck')."""
    last = final_loss(losses)
    return bool(np.isfinite(last) and last >= fraction * constant_predictor_loss)


def constant_predictor_loss(labels, num_classes, loss):
    """The loss of the best constant prediction: the depths' variance (MSE)
    or the entropy of their distribution (CE)."""
    labels = np.asarray(labels)
    if loss == "mse":
        return float(np.var(labels.astype("float64")))
    p = np.bincount(labels.ravel(), minlength=num_classes) / labels.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


# --------------------------------------------------------------------------
# Configurations, grids, scales.
# --------------------------------------------------------------------------

ADAMW_GRID = (5e-4, 1e-3, 5e-3, 1e-2)
SING_GRID = (5e-3, 1e-2, 5e-2, 1e-1)
BRIDGE_GRID = (1e-3, 5e-3, 1e-2, 5e-2)

SING_PARTS = ("centralize", "normalize", "lookahead", "softplus")


def sing_without(part=None):
    """SING's part switches with `part` off (all on for `None`)."""
    return {p: p != part for p in SING_PARTS}


def sing_only(part):
    """SING's part switches with only `part` on."""
    return {p: p == part for p in SING_PARTS}


@dataclasses.dataclass(frozen=True)
class Config:
    """One optimizer configuration of the study."""

    name: str
    group: str
    host: str  # adamw, adam, sgd, adafactor, lion
    sing: dict | None  # SING's arguments, None for the bare host
    grid: tuple
    weight_decay: float
    label: str

    @property
    def slug(self):
        """The name as written in file names."""
        return (
            self.name.replace("(", "_").replace(")", "")
            .replace("+", "_plus_").replace("-", "_minus_")
        )


def _configs():
    c = {}

    def add(name, group, host, sing, grid, wd, label):
        c[name] = Config(name, group, host, sing, tuple(grid), wd, label)

    add("adamw", "table1", "adamw", None, ADAMW_GRID, 0.05, "AdamW")
    add("sing", "table1", "adamw", sing_without(None), SING_GRID, 0.005, "SING(AdamW)")
    short = {"normalize": "norm", "centralize": "central", "lookahead": "lookahead", "softplus": "softplus"}
    for part in ("normalize", "centralize", "lookahead", "softplus"):
        add(f"adamw+{short[part]}", "ablation", "adamw",
            {**sing_only(part), "weight_decay_mode": "host"}, BRIDGE_GRID, 0.05,
            f"AdamW + {part}")
    for part in ("normalize", "centralize", "lookahead", "softplus"):
        add(f"sing-{short[part]}", "ablation", "adamw", sing_without(part),
            SING_GRID, 0.005, f"SING - {part}")
    auto = {"centralize": True, "normalize": True, "lookahead": True, "softplus": None}
    add("sgd", "hosts", "sgd", None, (1e-2, 3e-2, 1e-1, 3e-1), 5e-4, "SGD (momentum 0.9)")
    add("sing(sgd)", "hosts", "sgd", auto, (3e-2, 1e-1, 3e-1, 1.0), 5e-4, "SING(SGD)")
    add("adam", "hosts", "adam", None, ADAMW_GRID, 0.0, "Adam")
    add("sing(adam)", "hosts", "adam", auto, SING_GRID, 0.0, "SING(Adam)")
    add("adafactor", "hosts", "adafactor", None, (3e-3, 1e-2, 3e-2, 1e-1), 0.05, "Adafactor")
    add("sing(adafactor)", "hosts", "adafactor", auto, (3e-3, 1e-2, 3e-2, 1e-1), 0.005, "SING(Adafactor)")
    add("lion", "hosts", "lion", None, (1e-4, 3e-4, 1e-3, 3e-3), 0.05, "Lion")
    add("sing(lion)", "hosts", "lion", auto, (3e-4, 1e-3, 3e-3, 1e-2), 0.005, "SING(Lion)")
    return c


CONFIGS = _configs()
GROUPS = {
    "table1": [n for n, c in CONFIGS.items() if c.group == "table1"],
    "ablation": [n for n, c in CONFIGS.items() if c.group == "ablation"],
    "hosts": [n for n, c in CONFIGS.items() if c.group == "hosts"],
    "all": list(CONFIGS),
}

SIZES = {
    # name: (num_layers, num_heads, hidden_dim, mlp_dim)
    "tiny": (4, 4, 64, 128),
    "small": (6, 6, 192, 384),
    "vit_s": (12, 6, 384, 1536),  # ViT-S/16's shape
    "vit_b": (12, 12, 768, 3072),  # ViT-B/16's shape
}

SCALES = {
    "smoke": {
        "size": "tiny", "image_size": 16, "patch_size": 4, "num_rectangles": 3,
        "train_samples": 64, "val_samples": 32, "epochs": 1, "batch_size": 16,
        "configs": ("adamw", "sing"),
        "seeds": {"table1": (0,), "ablation": (0,), "hosts": (0,)},
        "lrs": {"adamw": (1e-3,), "sing": (1e-2,)},
        "extend": 0,
        # a guess: a few seconds of compilation dominate
        "seconds_per_step": 0.05, "seconds_per_run": 10.0,
    },
    "cpu": {
        "size": "tiny", "image_size": 32, "patch_size": 4, "num_rectangles": 5,
        "train_samples": 2048, "val_samples": 512, "epochs": 6, "batch_size": 32,
        "configs": tuple(GROUPS["all"]),
        "seeds": {"table1": (0, 1, 2), "ablation": (0,), "hosts": (0,)},
        "lrs": {},
        "extend": 0,
        # measured on the 2-core development CPU (JAX), see the docstring
        "seconds_per_step": 0.13, "seconds_per_run": 20.0,
    },
    "gpu": {
        "size": "vit_s", "image_size": 64, "patch_size": 8, "num_rectangles": 6,
        "train_samples": 16384, "val_samples": 2048, "epochs": 15, "batch_size": 256,
        "configs": tuple(GROUPS["table1"] + GROUPS["ablation"]),
        "seeds": {"table1": (0, 1), "ablation": (0,), "hosts": (0,)},
        "lrs": {n: CONFIGS[n].grid[1::2] for n in GROUPS["ablation"]},
        "extend": 0,
        # an estimate, not a measurement (see the docstring)
        "seconds_per_step": 0.025, "seconds_per_run": 15.0,
    },
    "paper": {
        "size": "vit_s", "image_size": 128, "patch_size": 16, "num_rectangles": 8,
        "train_samples": 50000, "val_samples": 5000, "epochs": 100, "batch_size": 512,
        "configs": tuple(GROUPS["all"]),
        "seeds": {"table1": (0, 1, 2), "ablation": (0,), "hosts": (0,)},
        "lrs": {},
        "extend": 1,
        # an estimate for one H100 (ViT-S/16 at 128px, batch 512)
        "seconds_per_step": 0.1, "seconds_per_run": 60.0,
    },
}

DATA_SEED = 0
WARMUP_FRACTION = 0.05
CHUNK = 1000  # images generated at a time (RDE's mask is n x k x s x s)

# --------------------------------------------------------------------------
# The plan: which runs, their settings and files.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """One planned run: a configuration at one lr, weight decay and seed."""

    config: str
    learning_rate: float
    weight_decay: float
    seed: int

    @property
    def filename(self):
        c = CONFIGS[self.config]
        lr, wd = (f"{v:g}".replace("+", "") for v in (self.learning_rate, self.weight_decay))
        return f"{c.slug}_lr{lr}_wd{wd}_seed{self.seed}.json"


def parse_floats(text):
    return tuple(float(v) for v in text.split(",") if v.strip())


def parse_ints(text):
    return tuple(int(v) for v in text.split(",") if v.strip())


def resolve_configs(text, scale):
    """Configuration names from a comma list of names and group names."""
    if not text:
        return list(SCALES[scale]["configs"])
    names = []
    for item in (t.strip() for t in text.split(",")):
        if item in GROUPS:
            names += GROUPS[item]
        elif item in CONFIGS:
            names.append(item)
        elif item:
            raise SystemExit(
                f"unknown configuration {item!r}: choose among "
                f"{', '.join(CONFIGS)} or the groups {', '.join(GROUPS)}"
            )
    return list(dict.fromkeys(names))


def lr_grid(name, args):
    """The lrs planned for configuration `name` (before any extension)."""
    if args.lrs:
        return parse_floats(args.lrs)
    return tuple(SCALES[args.scale]["lrs"].get(name, CONFIGS[name].grid))


def seeds_for(name, args):
    if args.seeds:
        return parse_ints(args.seeds)
    return tuple(SCALES[args.scale]["seeds"][CONFIGS[name].group])


def weight_decay_for(name, args):
    return CONFIGS[name].weight_decay if args.weight_decay is None else args.weight_decay


def scale_settings(args):
    """The data, model and training settings of a scale, with overrides."""
    s = dict(SCALES[args.scale])
    size = args.size or s["size"]
    epochs = args.epochs or s["epochs"]
    return {
        "scale": args.scale,
        "loss": args.loss,
        "size": size,
        "vit_shape": dict(zip(("num_layers", "num_heads", "hidden_dim", "mlp_dim"), SIZES[size], strict=True)),
        "image_size": s["image_size"],
        "patch_size": s["patch_size"],
        "num_rectangles": s["num_rectangles"],
        "train_samples": s["train_samples"],
        "val_samples": s["val_samples"],
        "data_seed": DATA_SEED,
        "epochs": epochs,
        "batch_size": s["batch_size"],
        "steps": epochs * -(-s["train_samples"] // s["batch_size"]),
        "schedule": f"linear warm-up from 0 over {WARMUP_FRACTION:.0%} of the steps, then cosine decay to 0",
    }


def run_settings(run, args):
    """Everything that defines a run's result (compared on resume)."""
    c = CONFIGS[run.config]
    return {
        **scale_settings(args),
        "config": c.name,
        "label": c.label,
        "host": c.host,
        "host_arguments": host_arguments(c.host, run.weight_decay),
        "sing_arguments": c.sing,
        "learning_rate": run.learning_rate,
        "weight_decay": run.weight_decay,
        "seed": run.seed,
    }


def default_out(args):
    out = RESULTS / args.scale
    suffix = ("_ce" if args.loss == "ce" else "") + (
        f"_{args.size}" if args.size and args.size != SCALES[args.scale]["size"] else ""
    )
    return out.with_name(out.name + suffix)


def read_run(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def canonical(obj):
    """`obj` as it reads back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(obj))


def run_status(run, args, out):
    """'done' (identical settings on disk), 'conflict' (other settings) or
    'todo'."""
    existing = read_run(out / run.filename)
    if existing is None:
        return "todo"
    if existing.get("settings") == canonical(run_settings(run, args)):
        return "done"
    return "todo" if args.overwrite else "conflict"


def differing_settings(run, args, out):
    existing = read_run(out / run.filename) or {}
    new = canonical(run_settings(run, args))
    old = existing.get("settings", {})
    return sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))


def plan(args):
    """The planned runs, config by config (grid x seeds)."""
    runs = []
    for name in resolve_configs(args.configs, args.scale):
        wd = weight_decay_for(name, args)
        for lr in lr_grid(name, args):
            for seed in seeds_for(name, args):
                runs.append(Run(name, lr, wd, seed))
    return runs


def estimated_seconds(args, out):
    """Seconds per run: the median wall time of the runs already in `out`
    (if any), else the scale's calibration."""
    walls = [
        r["results"]["wall_seconds"]
        for r in (read_run(p) for p in out.glob("*.json"))
        if r and r.get("settings", {}).get("scale") == args.scale
    ]
    if walls:
        return float(np.median(walls)), f"median of {len(walls)} runs present"
    s = SCALES[args.scale]
    steps = scale_settings(args)["steps"]
    return s["seconds_per_run"] + steps * s["seconds_per_step"], "the scale's calibration"


# --------------------------------------------------------------------------
# Grid extension (the paper's "extended when the best sits at an edge").
# --------------------------------------------------------------------------


def best_stable_lr(rows):
    """The best stable lr of `rows` (dicts with learning_rate, final
    accuracy and diverged): highest mean final val accuracy among the lrs
    where no seed diverged. `None` if no lr is stable."""
    by_lr = {}
    for r in rows:
        by_lr.setdefault(r["learning_rate"], []).append(r)
    stable = {
        lr: np.mean([r["final_val_pixel_accuracy"] for r in rs])
        for lr, rs in by_lr.items()
        if not any(r["diverged"] for r in rs)
    }
    if not stable:
        return None
    return max(stable, key=lambda lr: (stable[lr], -lr))


def next_lr(lrs, direction):
    """The next lr beyond the edge of the sorted ladder `lrs` (up: +1,
    down: -1), continuing its alternating ratios (5e-3, 1e-2 -> 5e-2, 1e-1)."""
    lrs = sorted(lrs)
    if len(lrs) < 3:
        ratio = lrs[-1] / lrs[0] if len(lrs) == 2 else 10.0
    elif direction > 0:
        ratio = lrs[-2] / lrs[-3]
    else:
        ratio = lrs[2] / lrs[1]
    lr = lrs[-1] * ratio if direction > 0 else lrs[0] / ratio
    return float(f"{lr:.3g}")


def extension_lr(rows):
    """The lr to add when the best stable lr of `rows` sits at an edge of
    the lrs run (below the lowest if none is stable), else `None`."""
    lrs = sorted({r["learning_rate"] for r in rows})
    if len(lrs) < 2:
        return None
    best = best_stable_lr(rows)
    if best is None or best == lrs[0]:
        return next_lr(lrs, -1)
    if best == lrs[-1]:
        return next_lr(lrs, +1)
    return None


def summary_row(payload):
    res = payload["results"]
    return {
        "learning_rate": payload["settings"]["learning_rate"],
        "final_val_pixel_accuracy": res["final_val_pixel_accuracy"],
        "diverged": res["diverged"],
    }


# --------------------------------------------------------------------------
# Environment: git, versions, device.
# --------------------------------------------------------------------------

CODE_PATHS = ("keras_sing", "benchmarks/rde_study.py")


def git(*argv):
    try:
        out = subprocess.run(
            ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state():
    """The commit of the code and whether `CODE_PATHS` differ from it."""
    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--", *CODE_PATHS)
    return {
        "git_commit": commit or "unknown (no git)",
        "git_dirty": None if changed is None else bool(changed),
        "git_dirty_paths": [] if not changed else [line[3:] for line in changed.splitlines()],
    }


def environment():
    """Backend, versions, device and git state of this process."""
    import keras
    import keras_hub

    import keras_sing

    backend = keras.backend.backend()
    env = {
        "backend": backend,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "keras_sing": keras_sing.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": device_name(backend),
        **git_state(),
    }
    if backend in ("jax", "tensorflow", "torch"):
        env[backend] = __import__(backend).__version__
    env["keras_sing_from_this_checkout"] = pathlib.Path(keras_sing.__file__).resolve().is_relative_to(REPO)
    return env


def device_name(backend):
    """What computes: the accelerator's name, or 'cpu'."""
    try:
        if backend == "jax":
            import jax

            d = jax.devices()[0]
            return f"{d.platform}: {getattr(d, 'device_kind', d)}"
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"gpu: {torch.cuda.get_device_name(0)}"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                return f"gpu: {gpus[0].name}"
    except Exception as e:  # pragma: no cover - depends on the machine
        return f"unknown ({type(e).__name__})"
    return "cpu"


# --------------------------------------------------------------------------
# Data, model, optimizer, training.
# --------------------------------------------------------------------------

_DATA = {}


def rde_data(settings):
    """`(x_train, y_train), (x_val, y_val)` of a scale (cached per process),
    generated in chunks of `CHUNK` images with seeds `[data_seed, split,
    chunk]`. MSE targets are float depths `(n, s, s, 1)`."""
    from keras_sing.datasets import rde

    key = tuple(settings[k] for k in ("image_size", "num_rectangles", "train_samples", "val_samples", "data_seed", "loss"))
    if key in _DATA:
        return _DATA[key]

    def split(n, index):
        xs, ys = [], []
        for chunk, start in enumerate(range(0, n, CHUNK)):
            x, y = rde.generate(
                min(CHUNK, n - start), settings["image_size"], settings["num_rectangles"],
                seed=[settings["data_seed"], index, chunk],
            )
            xs.append(x)
            ys.append(y)
        x, y = np.concatenate(xs), np.concatenate(ys)
        return x, (y[..., None].astype("float32") if settings["loss"] == "mse" else y)

    _DATA.clear()
    _DATA[key] = (split(settings["train_samples"], 0), split(settings["val_samples"], 1))
    return _DATA[key]


def build_model(settings):
    """KerasHub `ViTBackbone` (random init) + a per-patch linear decoder:
    1 depth channel (MSE) or the depth-class logits (CE)."""
    import keras
    import keras_hub

    layers, heads, hidden, mlp = SIZES[settings["size"]]
    size, patch = settings["image_size"], settings["patch_size"]
    channels = 1 if settings["loss"] == "mse" else settings["num_rectangles"] + 1
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3), patch_size=patch, num_layers=layers,
        num_heads=heads, hidden_dim=hidden, mlp_dim=mlp, use_class_token=False,
    )
    grid = size // patch
    x = keras.layers.Dense(patch * patch * channels, name="decoder")(backbone.output)
    x = keras.layers.Reshape((grid, grid, patch, patch, channels))(x)
    x = keras.layers.Permute((1, 3, 2, 4, 5))(x)
    out = keras.layers.Reshape((size, size, channels), name="depth")(x)
    return keras.Model(backbone.input, out, name="vit_depth")


def warmup_cosine(learning_rate, total_steps):
    """5% linear warm-up from 0, then cosine decay to 0 (the examples')."""
    import keras

    warmup = max(1, int(WARMUP_FRACTION * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, total_steps - warmup),
        warmup_target=learning_rate, warmup_steps=warmup,
    )


def host_arguments(host, weight_decay):
    """The host optimizer's arguments besides the learning rate."""
    wd = weight_decay or None
    return {
        "adamw": {"weight_decay": wd},
        "adam": {"weight_decay": wd},
        "sgd": {"momentum": 0.9, "weight_decay": wd},
        "adafactor": {"weight_decay": wd},
        "lion": {"weight_decay": wd},
    }[host]


def make_optimizer(settings):
    """The host with the warm-up + cosine schedule, wrapped in SING with
    the configuration's arguments when it has some."""
    import keras

    import keras_sing

    classes = {
        "adamw": keras.optimizers.AdamW, "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD, "adafactor": keras.optimizers.Adafactor,
        "lion": keras.optimizers.Lion,
    }
    schedule = warmup_cosine(settings["learning_rate"], settings["steps"])
    host = classes[settings["host"]](learning_rate=schedule, **settings["host_arguments"])
    if settings["sing_arguments"] is None:
        return host
    return keras_sing.SING(host, **settings["sing_arguments"])


def pixel_accuracy_metric(settings):
    """Validation pixel accuracy (definition in `RUN_DEFINITIONS`)."""
    import keras
    from keras import ops

    if settings["loss"] == "ce":
        return keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy")
    max_depth = float(settings["num_rectangles"])

    def pixel_accuracy(y_true, y_pred):
        depth = ops.clip(ops.round(y_pred), 0.0, max_depth)
        return ops.cast(ops.equal(depth, ops.cast(y_true, depth.dtype)), "float32")

    return keras.metrics.MeanMetricWrapper(pixel_accuracy, name="pixel_accuracy")


def step_losses_callback(num_samples, batch_size):
    """A callback recording every step's own loss (not the running mean),
    and each epoch's duration."""
    import keras

    class StepLoss(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.losses, self.epoch_seconds = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._seen, self._total, self._start = 0, 0.0, time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            batch_size_now = min(batch_size, num_samples - self._seen)
            self._seen += batch_size_now
            total = float(logs["loss"]) * self._seen
            self.losses.append((total - self._total) / batch_size_now)
            self._total = total

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_seconds.append(time.perf_counter() - self._start)

    return StepLoss()


def skipped_steps(optimizer):
    """SING's count of skipped non-finite steps (None for a bare host)."""
    variable = getattr(optimizer, "skipped_steps", None)
    if variable is None:
        return None
    import keras

    return int(keras.ops.convert_to_numpy(variable))


def rounded(values, digits=6):
    """Floats with `digits` significant digits; non-finite become None."""
    return [float(f"{v:.{digits}g}") if math.isfinite(v) else None for v in values]


def train_run(run, args):
    """Trains one run and returns its JSON payload."""
    import keras

    start = time.perf_counter()
    settings = run_settings(run, args)
    (x_train, y_train), (x_val, y_val) = rde_data(settings)
    keras.utils.clear_session()
    keras.utils.set_random_seed(run.seed)
    model = build_model(settings)
    optimizer = make_optimizer(settings)
    loss = (
        keras.losses.MeanSquaredError() if settings["loss"] == "mse"
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=[pixel_accuracy_metric(settings)], jit_compile="auto")
    recorder = step_losses_callback(len(x_train), settings["batch_size"])
    fit_start = time.perf_counter()
    history = model.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=settings["epochs"],
        batch_size=settings["batch_size"], shuffle=True, verbose=args.verbose,
        callbacks=[recorder, keras.callbacks.TerminateOnNaN()],
    ).history
    fit_seconds = time.perf_counter() - fit_start
    val_acc = [float(v) for v in history.get("val_pixel_accuracy", [])]
    completed = len(recorder.epoch_seconds)
    if len(val_acc) < settings["epochs"]:  # stopped by a NaN: the last weights
        final = model.evaluate(x_val, y_val, batch_size=settings["batch_size"], verbose=0, return_dict=True)
        final_acc = float(final["pixel_accuracy"])
    else:
        final_acc = val_acc[-1]
    num_classes = settings["num_rectangles"] + 1
    losses = recorder.losses
    reason, step = divergence(losses)
    later = sum(recorder.epoch_seconds[1:])
    steps_per_epoch = -(-len(x_train) // settings["batch_size"])
    later_steps = len(losses) - steps_per_epoch if completed > 1 else 0
    payload = {
        "schema": SCHEMA,
        "name": pathlib.Path(run.filename).stem,
        "seed": run.seed,
        "settings": settings,
        "definitions": RUN_DEFINITIONS,
        "results": {
            "final_val_pixel_accuracy": final_acc,
            "best_val_pixel_accuracy": max(val_acc + [final_acc]),
            "val_pixel_accuracy": val_acc,
            "val_loss": rounded(history.get("val_loss", [])),
            "epoch_train_loss": rounded(history.get("loss", [])),
            "step_loss": rounded(losses),
            "final_train_loss": final_loss(losses),
            "spikes": loss_spikes(losses),
            "spike_count": len(loss_spikes(losses)),
            "diverged": reason is not None,
            "divergence_reason": reason,
            "divergence_step": step,
            "constant_predictor_loss": constant_predictor_loss(y_train, num_classes, settings["loss"]),
            "stuck": is_stuck(losses, constant_predictor_loss(y_train, num_classes, settings["loss"])),
            "skipped_steps": skipped_steps(optimizer),
            "steps_run": len(losses),
            "epochs_completed": completed,
            "parameters": int(model.count_params()),
            "fit_seconds": round(fit_seconds, 2),
            "first_epoch_seconds": round(recorder.epoch_seconds[0], 2) if completed else None,
            "seconds_per_step": round(later / later_steps, 4) if later_steps else None,
            "wall_seconds": round(time.perf_counter() - start, 2),
        },
        "environment": environment(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if not math.isfinite(payload["results"]["final_train_loss"]):
        payload["results"]["final_train_loss"] = None
    return payload


def write_json(path, payload):
    """Writes atomically (a run is on disk whole or not at all)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False))
    tmp.replace(path)


# --------------------------------------------------------------------------
# The command line.
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--configs", default="", help="comma list of configurations and groups (" + ", ".join(GROUPS) + "); default: the scale's")
    p.add_argument("--seeds", default="", help="comma list of seeds for every configuration; default: the scale's per group")
    p.add_argument("--lrs", default="", help="comma list of learning rates for every configuration; default: each's grid")
    p.add_argument("--weight-decay", type=float, default=None, help="default: each configuration's")
    p.add_argument("--loss", choices=["mse", "ce"], default="mse")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="ViT size; default: the scale's")
    p.add_argument("--epochs", type=int, default=None, help="default: the scale's")
    p.add_argument("--extend", type=int, default=None, help="N: add up to 2N lrs in all, one at a time past the edge where the best stable lr sits; default: the scale's")
    p.add_argument("--out", default=None, help="default: docs/results/rde_study/<scale>[_ce][_<size>]")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, run nothing")
    p.add_argument("--max-minutes", type=float, default=None, help="stop before a run that would end past this budget")
    p.add_argument("--overwrite", action="store_true", help="rerun runs whose JSON holds other settings")
    p.add_argument("--verbose", type=int, default=0, help="Keras progress: 0, 1 or 2")
    return p.parse_args(argv)


def print_plan(runs, statuses, args, out, per_run, source):
    todo = [r for r, s in zip(runs, statuses, strict=True) if s == "todo"]
    print(f"scale {args.scale}: {len(runs)} planned runs in {out}")
    for r, s in zip(runs, statuses, strict=True):
        print(f"  [{s:8}] {r.config:16} lr {r.learning_rate:<8g} wd {r.weight_decay:<7g} seed {r.seed}")
    extend = args.extend if args.extend is not None else SCALES[args.scale]["extend"]
    print(f"done {statuses.count('done')}, to run {len(todo)}, conflicts {statuses.count('conflict')}")
    print(f"estimate: {len(todo)} runs x {per_run:.0f} s = {len(todo) * per_run / 60:.0f} minutes ({source})")
    if extend:
        configs = len({r.config for r in runs})
        print(f"grid extension: up to {2 * extend} more lrs per configuration ({configs} configurations) where the best sits at an edge")


def main(argv=None):
    """Runs the plan; returns a summary: the file names planned, to do (at
    the start), ran, skipped, in conflict; stopped_early; out."""
    args = parse_args(argv)
    out = pathlib.Path(args.out) if args.out else default_out(args)
    runs = plan(args)
    statuses = [run_status(r, args, out) for r in runs]
    per_run, source = estimated_seconds(args, out)
    print_plan(runs, statuses, args, out, per_run, source)
    summary = {"planned": [r.filename for r in runs], "todo": [r.filename for r, s in zip(runs, statuses, strict=True) if s == "todo"], "ran": [], "skipped": [], "conflicts": [], "stopped_early": False, "out": str(out)}
    for r, s in zip(runs, statuses, strict=True):
        if s == "conflict":
            summary["conflicts"].append(r.filename)
            print(f"conflict: {out / r.filename} holds other settings ({', '.join(differing_settings(r, args, out))}); --overwrite to rerun")
    if args.dry_run:
        return summary
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    durations = []
    extend = args.extend if args.extend is not None else SCALES[args.scale]["extend"]
    for name in dict.fromkeys(r.config for r in runs):
        queue = [r for r in runs if r.config == name]
        extensions = 0
        while queue:
            for r in queue:
                if not execute(r, args, out, summary, started, durations, per_run):
                    return summary
            queue = []
            if extensions < 2 * extend and not args.lrs:
                queue = extension_runs(name, args, out, runs)
                extensions += bool(queue)
                runs += queue
    print(f"done: ran {len(summary['ran'])}, skipped {len(summary['skipped'])}, conflicts {len(summary['conflicts'])}")
    return summary


def execute(run, args, out, summary, started, durations, per_run):
    """Runs `run` unless done or conflicting; False when the time budget
    says to stop."""
    status = run_status(run, args, out)
    if status == "done":
        summary["skipped"].append(run.filename)
        return True
    if status == "conflict":
        if run.filename not in summary["conflicts"]:
            summary["conflicts"].append(run.filename)
        return True
    expected = float(np.median(durations)) if durations else per_run
    elapsed = time.perf_counter() - started
    if args.max_minutes is not None and elapsed + expected > 60 * args.max_minutes:
        print(f"stopping: {elapsed / 60:.1f} min spent, the next run needs ~{expected / 60:.1f} of the {args.max_minutes:g} min budget; rerun to resume")
        summary["stopped_early"] = True
        return False
    payload = train_run(run, args)
    write_json(out / run.filename, payload)
    res = payload["results"]
    durations.append(res["wall_seconds"])
    summary["ran"].append(run.filename)
    print(
        f"{run.config:16} lr {run.learning_rate:<8g} seed {run.seed}: final acc {res['final_val_pixel_accuracy']:.4f} "
        f"(best {res['best_val_pixel_accuracy']:.4f}), spikes {res['spike_count']}, "
        f"diverged {res['divergence_reason'] or 'no'}, {res['wall_seconds']:.0f} s",
        flush=True,
    )
    return True


def extension_runs(name, args, out, runs):
    """Runs at one more lr when `name`'s best stable lr sits at an edge of
    the lrs it has results for (all seeds of every planned lr done)."""
    mine = [r for r in runs if r.config == name]
    payloads = [read_run(out / r.filename) for r in mine]
    if any(p is None for p in payloads):
        return []
    lr = extension_lr([summary_row(p) for p in payloads])
    if lr is None or any(r.learning_rate == lr for r in mine):
        return []
    print(f"{name}: best stable lr at an edge, extending the grid with lr {lr:g}")
    return [Run(name, lr, weight_decay_for(name, args), s) for s in seeds_for(name, args)]


if __name__ == "__main__":
    main()
