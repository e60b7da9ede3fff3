"""The RDE study's report: tables, plots and plain-words answers from the
run JSONs of `benchmarks/rde_study.py` (issue 12).

    python benchmarks/rde_report.py --scale cpu
    python benchmarks/rde_report.py --runs DIR --md OUT.md --figures DIR

Reads every run JSON of a scale (default `docs/results/rde_study/<scale>/`)
and writes `docs/results.md` (overwritten) with: the paper's Table 1 (AdamW
vs SING), Table 2 (ablation) and Table 3 (hosts) layouts, our numbers next
to the paper's; every setting's numbers; the scale, hardware, commits and
time spent; and "Answers in plain words", computed from the runs present.
Figures (matplotlib, Agg) go to `docs/results/rde_study/<scale>_*.png`:
final accuracy against the learning rate (AdamW and SING, seed bands), loss
curves with spikes marked, and the ablation and host bar charts.

Spikes, divergence and "stuck" are recomputed from each run's per-step
losses with `rde_study`'s definitions, so runs made under older thresholds
are judged like new ones. Best stable lr: the lr with the highest mean final
validation pixel accuracy among the lrs where no seed diverged.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import rde_study  # noqa: E402

REPO = rde_study.REPO

# The paper's numbers (ViT-S on RDE, 128px; validation pixel accuracy, %).
PAPER_TABLE1 = {
    "adamw": ("1e-3", "78.13", "loss spikes"),
    "sing": ("5e-2", "96.56", ""),
}
PAPER_VIT_B = "ViT-B: AdamW does not converge, SING(AdamW) 97.15%"
PAPER_TABLE2 = {
    "adamw": "78.13% at 1e-3 (reference)",
    "adamw+norm": "normalization alone lets AdamW converge",
    "sing": "96.56% at 5e-2 (reference)",
    "sing-central": "lower best stable lr and accuracy than SING",
    "sing-lookahead": "lower best stable lr and accuracy than SING",
    "sing-softplus": "lower best stable lr and accuracy than SING",
}
PAPER_TABLE3 = {
    "sgd": ("0.25", "94.25"),
    "adabelief": ("60.26", "96.70"),
    "adafactor": ("74.98", "76.26"),
}
PART_NAMES = {"norm": "normalization", "central": "centralization", "lookahead": "LookAhead", "softplus": "softplus"}
HOSTS = ("sgd", "adam", "adafactor", "lion")
ABLATION_ORDER = (
    "adamw", "adamw+norm", "adamw+central", "adamw+lookahead", "adamw+softplus",
    "sing", "sing-norm", "sing-central", "sing-lookahead", "sing-softplus",
)

# --------------------------------------------------------------------------
# Runs -> per-setting and per-configuration summaries.
# --------------------------------------------------------------------------


def load_runs(runs_dir):
    """Every run JSON of the study in `runs_dir`, judged with the current
    definitions (`spike_count`, `diverged`, `stuck` recomputed)."""
    runs = []
    for path in sorted(pathlib.Path(runs_dir).glob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except ValueError:
            continue
        if payload.get("schema") != rde_study.SCHEMA:
            continue
        res = payload["results"]
        losses = res["step_loss"]
        reason, step = rde_study.divergence(losses)
        res["spikes"] = rde_study.loss_spikes(losses)
        res["spike_count"] = len(res["spikes"])
        res["diverged"] = reason is not None
        res["divergence_reason"] = reason
        res["divergence_step"] = step
        res["stuck"] = rde_study.is_stuck(losses, res["constant_predictor_loss"])
        runs.append(payload)
    return runs


def settings_of(runs):
    """`{config: {(lr, wd): [runs over seeds]}}`."""
    out = {}
    for r in runs:
        s = r["settings"]
        out.setdefault(s["config"], {}).setdefault((s["learning_rate"], s["weight_decay"]), []).append(r)
    return out


def setting_summary(runs):
    """Mean, spread and counts of one (config, lr, wd) over its seeds."""
    final = np.array([r["results"]["final_val_pixel_accuracy"] for r in runs])
    best = np.array([r["results"]["best_val_pixel_accuracy"] for r in runs])
    return {
        "seeds": sorted(r["seed"] for r in runs),
        "n": len(runs),
        "mean": float(final.mean()),
        "std": float(final.std(ddof=1)) if len(runs) > 1 else None,
        "min": float(final.min()),
        "max": float(final.max()),
        "best_epoch_mean": float(best.mean()),
        "diverged": sum(r["results"]["diverged"] for r in runs),
        "reasons": sorted({r["results"]["divergence_reason"] for r in runs if r["results"]["diverged"]}),
        "spiky_runs": sum(r["results"]["spike_count"] > 0 for r in runs),
        "spikes": sum(r["results"]["spike_count"] for r in runs),
        "stuck": sum(r["results"]["stuck"] for r in runs),
        "skipped_steps": sum(r["results"].get("skipped_steps") or 0 for r in runs),
        "minutes": sum(r["results"]["wall_seconds"] for r in runs) / 60,
    }


def config_summary(by_setting):
    """One configuration: its settings' summaries, best stable setting,
    stable and diverged lrs."""
    rows = {key: setting_summary(rs) for key, rs in sorted(by_setting.items())}
    stable = {k: v for k, v in rows.items() if v["diverged"] == 0}
    best = max(stable, key=lambda k: (stable[k]["mean"], -k[0])) if stable else None
    return {
        "settings": rows,
        "best": best,
        "best_row": rows[best] if best else None,
        "stable_lrs": sorted({k[0] for k in stable}),
        "diverged_lrs": sorted({k[0] for k, v in rows.items() if v["diverged"]}),
        "lrs": sorted({k[0] for k in rows}),
    }


def summarize(runs):
    return {name: config_summary(s) for name, s in settings_of(runs).items()}


# --------------------------------------------------------------------------
# Formatting.
# --------------------------------------------------------------------------

NOT_RUN = "not run"


def fmt_lr(lr):
    return "–" if lr is None else f"{lr:g}"


def fmt_lrs(lrs):
    return ", ".join(fmt_lr(x) for x in lrs) if lrs else "none"


def fmt_acc(row):
    """'65.66% ± 0.42 (3 seeds)': the mean final accuracy over seeds, ± a
    sample std."""
    if row is None:
        return "no stable lr"
    spread = f" ± {100 * row['std']:.2f}" if row["std"] is not None else ""
    return f"{100 * row['mean']:.2f}%{spread} ({row['n']} seed{'s' if row['n'] > 1 else ''})"


def best_lr_text(c):
    """The best stable lr (with its weight decay when several were run)."""
    if c["best"] is None:
        return "none stable"
    lr, wd = c["best"]
    wds = {k[1] for k in c["settings"]}
    return fmt_lr(lr) + (f" (wd {wd:g})" if len(wds) > 1 else "")


def spikes_text(c):
    runs = sum(v["n"] for v in c["settings"].values())
    spiky = sum(v["spiky_runs"] for v in c["settings"].values())
    return f"{spiky}/{runs}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Tables.
# --------------------------------------------------------------------------


def table1(s):
    header = ["optimizer", "ours: best stable lr", "ours: final val pixel acc. (mean ± std)",
              "ours: best-epoch acc. %", "stable lrs", "diverged lrs", "runs with spikes",
              "paper: best lr", "paper: acc. %"]
    rows = []
    for name in ("adamw", "sing"):
        label = rde_study.CONFIGS[name].label
        p_lr, p_acc, p_note = PAPER_TABLE1[name]
        paper = (p_lr, p_acc + (f" ({p_note})" if p_note else ""))
        c = s.get(name)
        if c is None:
            rows.append([label, NOT_RUN, NOT_RUN, "", "", "", "", *paper])
            continue
        best = c["best_row"]
        rows.append([
            label, best_lr_text(c), fmt_acc(best),
            f"{100 * best['best_epoch_mean']:.2f}" if best else "–",
            fmt_lrs(c["stable_lrs"]), fmt_lrs(c["diverged_lrs"]), spikes_text(c), *paper,
        ])
    return table(header, rows)


def reference_of(name):
    return "adamw" if name == "adamw" or name.startswith("adamw+") else "sing"


def delta_text(s, name, ref):
    c, r = s.get(name), s.get(ref)
    if name == ref or not c or not r or not c["best_row"] or not r["best_row"]:
        return "–"
    return f"{100 * (c['best_row']['mean'] - r['best_row']['mean']):+.2f}"


def table2(s):
    header = ["configuration", "SING arguments", "ours: best stable lr", "ours: final acc. at it",
              "largest stable lr", "diverged lrs", "Δ acc. vs its reference (points)", "paper"]
    rows = []
    for name in ABLATION_ORDER:
        cfg = rde_study.CONFIGS[name]
        args = "–" if cfg.sing is None else ", ".join(
            f"{k}={v}" for k, v in cfg.sing.items() if k in rde_study.SING_PARTS)
        paper = PAPER_TABLE2.get(name, "(not quoted here)")
        c = s.get(name)
        if c is None:
            rows.append([cfg.label, args, NOT_RUN, "", "", "", "", paper])
            continue
        rows.append([
            cfg.label, args, best_lr_text(c), fmt_acc(c["best_row"]),
            fmt_lr(max(c["stable_lrs"])) if c["stable_lrs"] else "none",
            fmt_lrs(c["diverged_lrs"]), delta_text(s, name, reference_of(name)), paper,
        ])
    return table(header, rows)


def table3(s):
    header = ["host", "ours: host alone (best stable lr: acc.)", "ours: SING(host) (best stable lr: acc.)",
              "Δ (points)", "paper: host → SING(host) %"]
    rows = []
    for host in ("sgd", "adabelief", "adafactor", "adam", "lion"):
        paper = " → ".join(PAPER_TABLE3[host]) if host in PAPER_TABLE3 else "not in the paper's Table 3"
        if host == "adabelief":
            rows.append(["AdaBelief", "not run: Keras has no AdaBelief", "not run", "–", paper])
            continue
        cells = []
        for name in (host, f"sing({host})"):
            c = s.get(name)
            cells.append(NOT_RUN if c is None else f"{best_lr_text(c)}: {fmt_acc(c['best_row'])}")
        rows.append([rde_study.CONFIGS[host].label, *cells, delta_text(s, f"sing({host})", host), paper])
    return table(header, rows)


def all_settings_table(s):
    header = ["configuration", "lr", "wd", "seeds", "final acc. mean ± std [min, max] %",
              "best-epoch acc. %", "diverged (why)", "spikes (runs with)", "stuck", "skipped steps", "minutes"]
    rows = []
    for name in rde_study.CONFIGS:
        if name not in s:
            continue
        for (lr, wd), v in s[name]["settings"].items():
            div = f"{v['diverged']}/{v['n']}" + (f" ({', '.join(v['reasons'])})" if v["reasons"] else "")
            rows.append([
                name, fmt_lr(lr), f"{wd:g}", ",".join(map(str, v["seeds"])),
                f"{fmt_acc(v)} [{100 * v['min']:.2f}, {100 * v['max']:.2f}]",
                f"{100 * v['best_epoch_mean']:.2f}", div, f"{v['spikes']} ({v['spiky_runs']})",
                f"{v['stuck']}/{v['n']}", v["skipped_steps"], f"{v['minutes']:.1f}",
            ])
    return table(header, rows) if rows else "No runs."


# --------------------------------------------------------------------------
# Answers in plain words, from the numbers.
# --------------------------------------------------------------------------


def stable_range_answer(s):
    lines = []
    for name in ("adamw", "sing"):
        c = s.get(name)
        label = rde_study.CONFIGS[name].label
        if c is None:
            lines.append(f"- {label}: not run.")
            continue
        spiky = [lr for (lr, _), v in c["settings"].items() if v["spiky_runs"]]
        stuck = [lr for (lr, _), v in c["settings"].items() if v["stuck"]]
        lines.append(
            f"- {label}: tried lr {fmt_lrs(c['lrs'])}; no seed diverged at {fmt_lrs(c['stable_lrs'])}; "
            f"diverged at {fmt_lrs(c['diverged_lrs'])}; loss spikes at {fmt_lrs(sorted(set(spiky)))}; "
            f"stuck near the constant predictor at {fmt_lrs(sorted(set(stuck)))}."
        )
    a, b = s.get("adamw"), s.get("sing")
    if a and b and a["stable_lrs"] and b["stable_lrs"]:
        ratio = max(b["stable_lrs"]) / max(a["stable_lrs"])
        lines.append(
            f"- The largest stable lr is {fmt_lr(max(b['stable_lrs']))} with SING and "
            f"{fmt_lr(max(a['stable_lrs']))} with AdamW ({ratio:g}x)"
            + (" (the top of a grid is a lower bound: it may be stable higher)." if max(b["stable_lrs"]) == max(b["lrs"]) or max(a["stable_lrs"]) == max(a["lrs"]) else ".")
        )
    stuck_everywhere = [
        f"{rde_study.CONFIGS[name].label} ({fmt_lrs(sorted(lr for (lr, _) in c['settings']))})"
        for name, c in sorted(s.items())
        if all(v["stuck"] for v in c["settings"].values())
    ]
    stuck_mostly = [
        f"{rde_study.CONFIGS[name].label} (all but {fmt_lrs(sorted(lr for (lr, _), v in c['settings'].items() if not v['stuck']))})"
        for name, c in sorted(s.items())
        if sum(not v["stuck"] for v in c["settings"].values()) == 1 and len(c["settings"]) > 2
    ]
    if stuck_everywhere or stuck_mostly:
        lines.append(
            "- Stuck near the constant predictor (at least one seed) at every lr tried: "
            + (", ".join(stuck_everywhere) or "none")
            + "; at every lr but one: " + (", ".join(stuck_mostly) or "none")
            + "."
            if stuck_everywhere else
            "- Stuck near the constant predictor (at least one seed) at every lr but one: "
            + ", ".join(stuck_mostly) + "."
        )
    return "\n".join(lines)


SINGLE_SEED_TOLERANCE = 0.01  # 1 point, when a side has no seed spread


def compare(a_row, b_row):
    """`(b - a, kind, text)`: how the difference of two mean accuracies
    compares with the seed spread (the larger of the two sample stds):
    kind 'clear' beyond 2x the spread, 'small' between 1x and 2x, 'within'
    under 1x. With one seed on a side there is no spread: 'within' under 1
    point, else 'unsure'."""
    diff = b_row["mean"] - a_row["mean"]
    stds = [r["std"] for r in (a_row, b_row) if r["std"] is not None]
    if len(stds) < 2:
        if abs(diff) < SINGLE_SEED_TOLERANCE:
            return diff, "within", "under 1 point with a single seed on one side: no clear winner"
        return diff, "unsure", "a single seed on one side: no spread to judge it against"
    spread = max(stds)
    if abs(diff) > 2 * spread:
        kind, text = "clear", "clearly beyond the seed spread"
    elif abs(diff) > spread:
        kind, text = "small", "beyond the seed spread but under twice it"
    else:
        kind, text = "within", "within the seed spread (no clear winner)"
    ratio = abs(diff) / spread if spread else float("inf")
    return diff, kind, (
        f"{text}: {ratio:.2f}x the larger seed std ({100 * spread:.2f} points)"
    )


def winner_answer(s):
    a, b = s.get("adamw"), s.get("sing")
    if not a or not b:
        return "- Not run: needs both the `adamw` and `sing` rows."
    if not a["best_row"] or not b["best_row"]:
        return "- One of them has no stable lr: " + ("AdamW" if not a["best_row"] else "SING") + " diverged at every lr tried."
    diff, _, verdict = compare(a["best_row"], b["best_row"])
    winner = "SING" if diff > 0 else "AdamW"
    lines = [
        f"- At its own best stable lr, AdamW reaches {fmt_acc(a['best_row'])} (lr {fmt_lr(a['best'][0])}) and "
        f"SING {fmt_acc(b['best_row'])} (lr {fmt_lr(b['best'][0])}): {winner} is ahead by "
        f"{100 * abs(diff):.2f} points, {verdict}. Seed range: AdamW "
        f"[{100 * a['best_row']['min']:.2f}, {100 * a['best_row']['max']:.2f}], "
        f"SING [{100 * b['best_row']['min']:.2f}, {100 * b['best_row']['max']:.2f}]."
    ]
    for lr, (x, wx), (y, wy) in same_lr_pairs(a, b):
        lines.append(f"- At the same lr {fmt_lr(lr)}: AdamW {fmt_acc(x)} (wd {wx:g}), SING {fmt_acc(y)} (wd {wy:g}).")
    return "\n".join(lines)


def same_lr_pairs(a, b):
    """`[(lr, (row, wd) of a, (row, wd) of b)]` for the lrs in both grids:
    the recipes' weight decays differ (AdamW 0.05, SING 0.005), so settings
    are matched on the lr alone, each at its own weight decay (the first,
    where a second pass tried several)."""
    def by_lr(c):
        rows = {}
        for (lr, wd), row in sorted(c["settings"].items()):
            rows.setdefault(lr, (row, wd))
        return rows

    x, y = by_lr(a), by_lr(b)
    return [(lr, x[lr], y[lr]) for lr in sorted(set(x) & set(y))]


def parts_answer(s):
    ref = s.get("sing")
    lines = []
    if ref and ref["best_row"]:
        for part in ("norm", "central", "lookahead", "softplus"):
            c = s.get(f"sing-{part}")
            long = PART_NAMES[part]
            if c is None:
                lines.append(f"- Removing {long} from SING: not run.")
                continue
            if c["best_row"] is None:
                lines.append(f"- Removing {long} from SING: no stable lr at all ({fmt_lrs(c['diverged_lrs'])} diverged): it matters.")
                continue
            d = c["best_row"]["mean"] - ref["best_row"]["mean"]
            # a single seed on either side has no spread of its own
            stds = [r["std"] for r in (ref["best_row"], c["best_row"])]
            tol = max([x for x in stds if x is not None] + (
                [SINGLE_SEED_TOLERANCE] if None in stds else []))
            top = max(c["stable_lrs"]) < max(ref["stable_lrs"]) if ref["stable_lrs"] else False
            matters = d < -tol or top
            lines.append(
                f"- Removing {long} from SING: {100 * d:+.2f} points at its best stable lr "
                f"{fmt_lr(c['best'][0])} (SING: {fmt_lr(ref['best'][0])}), largest stable lr "
                f"{fmt_lr(max(c['stable_lrs']))} (SING: {fmt_lr(max(ref['stable_lrs']))}): "
                + ("it matters here." if matters else "no effect beyond the tolerance here.")
                + f" (Tolerance: the larger seed std, at least 1 point when a side has one seed: {100 * tol:.2f} points.)"
            )
    else:
        lines.append("- SING minus one part: needs the `sing` row with a stable lr (" + ("no stable lr" if ref else NOT_RUN) + ").")
    base = s.get("adamw")
    for part in ("norm", "central", "lookahead", "softplus"):
        c = s.get(f"adamw+{part}")
        part = PART_NAMES[part]
        if c is None:
            lines.append(f"- AdamW + {part} alone: not run.")
        elif not base or not base["best_row"] or not c["best_row"]:
            lines.append(f"- AdamW + {part} alone: best stable lr {best_lr_text(c)}, {fmt_acc(c['best_row'])} (no AdamW reference to compare).")
        else:
            d = c["best_row"]["mean"] - base["best_row"]["mean"]
            lines.append(
                f"- AdamW + {part} alone: {100 * d:+.2f} points vs AdamW at best stable lr {fmt_lr(c['best'][0])}"
                f" (AdamW: {fmt_lr(base['best'][0])}); largest stable lr {fmt_lr(max(c['stable_lrs']))}."
            )
    return "\n".join(lines)


def hosts_answer(s):
    lines = []
    for host in HOSTS:
        h, g = s.get(host), s.get(f"sing({host})")
        label = rde_study.CONFIGS[host].label
        if h is None or g is None:
            lines.append(f"- {label}: not run" + (" (both rows needed)." if (h or g) else "."))
        elif not h["best_row"] or not g["best_row"]:
            lines.append(f"- {label}: alone {best_lr_text(h)}, with SING {best_lr_text(g)} (a row without a stable lr).")
        else:
            diff, _, verdict = compare(h["best_row"], g["best_row"])
            lines.append(
                f"- {label}: {fmt_acc(h['best_row'])} alone (lr {fmt_lr(h['best'][0])}), "
                f"{fmt_acc(g['best_row'])} with SING (lr {fmt_lr(g['best'][0])}): {100 * diff:+.2f} points, {verdict}."
            )
    lines.append("- AdaBelief (the paper's 60.26% → 96.70%): not run, Keras has no AdaBelief.")
    return "\n".join(lines)


def no_help_answer(s):
    """Where SING did not do better: its rows at or below their reference."""
    lines = []
    pairs = [("adamw", "sing")] + [(h, f"sing({h})") for h in HOSTS]
    for ref, name in pairs:
        r, c = s.get(ref), s.get(name)
        if not r or not c or not r["best_row"] or not c["best_row"]:
            continue
        diff, kind, verdict = compare(r["best_row"], c["best_row"])
        if diff <= 0 or kind == "within":
            lines.append(f"- {rde_study.CONFIGS[name].label} vs {rde_study.CONFIGS[ref].label}: {100 * diff:+.2f} points ({verdict}).")
    a, b = s.get("adamw"), s.get("sing")
    if a and b:
        for lr, (x, wx), (y, wy) in same_lr_pairs(a, b):
            if y["mean"] <= x["mean"]:
                lines.append(f"- At lr {fmt_lr(lr)} (in both grids) AdamW (wd {wx:g}) does as well or better: {fmt_acc(x)} vs {fmt_acc(y)} (wd {wy:g}).")
    if not lines:
        lines.append(
            "- No pair present has SING at or below its reference at each one's best stable lr "
            "(nor within the seed spread; with one seed, within 1 point)." if s else "- Not run."
        )
    return "\n".join(lines)


def spikes_elsewhere(s):
    """A sentence naming the other configurations' settings whose runs
    spiked."""
    where = [
        f"{name} at lr {fmt_lr(lr)}"
        for name, c in sorted(s.items())
        if name not in ("adamw", "sing")
        for (lr, _), v in sorted(c["settings"].items())
        if v["spiky_runs"]
    ]
    if not where:
        return "No other run spiked."
    return "Other runs that spiked: " + ", ".join(where) + "."


def against_paper_answer(s):
    """Where our numbers disagree with the paper's, and the likely reasons
    (the differences between the two settings, which are fixed)."""
    a, b = s.get("adamw"), s.get("sing")
    lines = []
    if a and b and a["best_row"] and b["best_row"]:
        spiky = sum(v["spiky_runs"] for c in (a, b) for v in c["settings"].values())
        lines += [
            f"- Accuracy: ours {fmt_acc(a['best_row'])} (AdamW) and {fmt_acc(b['best_row'])} (SING), "
            "against the paper's 78.13% and 96.56%. The absolute numbers are not comparable (see "
            "below); the ordering " + ("agrees" if b["best_row"]["mean"] > a["best_row"]["mean"] else "disagrees") + ".",
            f"- Best learning rates: ours {fmt_lr(a['best'][0])} (AdamW) and {fmt_lr(b['best'][0])} "
            "(SING), the paper's 1e-3 and 5e-2.",
            f"- Loss spikes: {spiky} of the AdamW and SING(AdamW) runs spiked; the paper reports AdamW's "
            "loss spiking. " + ("Not reproduced at this scale. " if spiky == 0 else "") + spikes_elsewhere(s),
        ]
    else:
        lines.append("- Not run: needs the `adamw` and `sing` rows.")
    lines.append(
        "- Likely reasons for any difference: scale (the model, images and steps under Setup above, "
        "where the paper trains a ViT-S of ~22M parameters for 100 epochs of 50K 128px images); the "
        "generator (ours is RDE-like, rebuilt from "
        "the paper's description); the decoder (a per-patch linear layer, the paper's is not "
        "specified); the loss is the same (MSE on depth, accuracy of the rounded prediction)."
    )
    return "\n".join(lines)


def baseline_answer(s, baseline):
    """AdamW's and SING's best rows against predicting background
    everywhere."""
    rows = [(label, s[name]["best_row"]) for name, label in (("adamw", "AdamW"), ("sing", "SING"))
            if s.get(name) and s[name]["best_row"]]
    if baseline is None or not rows:
        return ""
    return "\n- Against predicting background at every pixel (" + f"{100 * baseline:.2f}%): " + ", ".join(
        f"{label} {100 * (row['mean'] - baseline):+.2f} points" for label, row in rows
    ) + ". The paper reports 78.13% (AdamW) and 96.56% (SING) on its RDE; at this scale a net that beats the " \
        "baseline by a few points has learned little more than the background."


def answers(s, n_runs, scale, baseline=None):
    return "\n\n".join([
        f"Computed by `benchmarks/rde_report.py` from the {n_runs} runs of scale `{scale}` present when "
        "it ran; every sentence is filled in from those runs, and rows without runs say \"not run\". "
        "At a small scale these answer the questions *at that scale*, not at the paper's.",
        "**Which learning rates are stable?**\n\n" + stable_range_answer(s),
        "**Who wins, each at its own best stable lr, against the seed spread?**\n\n" + winner_answer(s)
        + baseline_answer(s, baseline),
        "**Which parts of SING matter?**\n\n" + parts_answer(s),
        "**Does SING help other hosts?**\n\n" + hosts_answer(s),
        "**Where does SING not help?**\n\n" + no_help_answer(s),
        "**Where do our numbers disagree with the paper's, and why?**\n\n" + against_paper_answer(s),
    ])


# --------------------------------------------------------------------------
# Figures.
# --------------------------------------------------------------------------


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lr_sensitivity(s, path):
    """Final val accuracy vs lr: mean over seeds, min-max band, diverged
    lrs crossed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, colour in (("adamw", "tab:blue"), ("sing", "tab:orange")):
        c = s.get(name)
        if not c:
            continue
        keys = sorted(c["settings"])
        lrs = [k[0] for k in keys]
        rows = [c["settings"][k] for k in keys]
        ax.plot(lrs, [100 * r["mean"] for r in rows], marker="o", color=colour,
                label=f"{rde_study.CONFIGS[name].label} (mean over seeds)")
        ax.fill_between(lrs, [100 * r["min"] for r in rows], [100 * r["max"] for r in rows],
                        color=colour, alpha=0.2)
        bad = [(lr, r) for lr, r in zip(lrs, rows, strict=True) if r["diverged"]]
        if bad:
            ax.scatter([b[0] for b in bad], [100 * b[1]["mean"] for b in bad], marker="x", s=80,
                       color="red", zorder=3, label="a seed diverged" if name == "adamw" else None)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation pixel accuracy (%)")
    ax.set_title("Learning-rate sensitivity (band: min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss_curves(s, path):
    """Per-step training loss of AdamW and SING at each lr (one seed per lr:
    one that diverged, else the one with the most spikes, else the lowest),
    spikes marked with red triangles, divergence with a black cross."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, name in zip(axes, ("adamw", "sing"), strict=True):
        c = s.get(name)
        ax.set_title(rde_study.CONFIGS[name].label + ("" if c else ": not run"))
        if not c:
            continue
        for (lr, _wd), v in sorted(c["settings"].items()):
            run = max(v["runs"], key=lambda r: (r["results"]["diverged"], r["results"]["spike_count"], -r["seed"]))
            loss = np.array([np.nan if x is None else x for x in run["results"]["step_loss"]], dtype=float)
            line, = ax.plot(loss, linewidth=0.8, label=f"lr {lr:g} (seed {run['seed']})")
            spikes = run["results"]["spikes"]
            ax.scatter(spikes, loss[spikes], marker="v", color="red", s=30, zorder=3)
            step = run["results"].get("divergence_step")
            if run["results"]["diverged"] and step is not None and step < len(loss):
                ax.scatter([step], [np.nanmax(loss[: step + 1]) if step else loss[0]], marker="X", color="black", s=60, zorder=3)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("training loss per step (▼ spike, ✕ divergence)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(s, path):
    """Best stable accuracy (mean, seed std as error bar) of the ablation
    rows and of each host alone and with SING."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [5, 3]})

    def bar(ax, x, name, colour):
        c = s.get(name)
        row = c["best_row"] if c else None
        if row is None:
            ax.text(x, 1, NOT_RUN if c is None else "no stable lr", rotation=90, ha="center", va="bottom", fontsize=7)
            return
        ax.bar(x, 100 * row["mean"], yerr=100 * (row["std"] or 0), color=colour, capsize=3)
        ax.text(x, 100 * row["mean"] + 1, f"lr {c['best'][0]:g}", rotation=90, ha="center", va="bottom", fontsize=7)

    for i, name in enumerate(ABLATION_ORDER):
        bar(axes[0], i, name, "tab:blue" if reference_of(name) == "adamw" else "tab:orange")
    axes[0].set_xlim(-0.6, len(ABLATION_ORDER) - 0.4)
    axes[1].set_xlim(-0.8, 3 * len(HOSTS) - 1.2)
    axes[0].set_xticks(range(len(ABLATION_ORDER)), ABLATION_ORDER, rotation=35, ha="right", fontsize=8)
    axes[0].set_title("Ablation: best stable lr's final accuracy")
    for i, host in enumerate(HOSTS):
        bar(axes[1], 3 * i, host, "tab:gray")
        bar(axes[1], 3 * i + 1, f"sing({host})", "tab:orange")
    axes[1].set_xticks([3 * i + 0.5 for i in range(len(HOSTS))], [f"{h} / SING" for h in HOSTS], fontsize=8)
    axes[1].set_title("Hosts: alone (grey) and with SING (orange)")
    for ax in axes:
        ax.set_ylabel("final validation pixel accuracy (%)")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# The page.
# --------------------------------------------------------------------------


def extended_lrs(runs, scale):
    """`{config: sorted lrs}` run beyond the scale's planned grid."""
    args = rde_study.parse_args(["--scale", scale])
    extra = {}
    for r in runs:
        name, lr = r["settings"]["config"], r["settings"]["learning_rate"]
        if lr not in rde_study.lr_grid(name, args):
            extra.setdefault(name, set()).add(lr)
    return {name: sorted(lrs) for name, lrs in extra.items()}


def depth_shares(settings):
    """The share of each depth among the validation pixels: the largest
    is the accuracy of predicting that depth (background) everywhere."""
    _, (_, y_val) = rde_study.rde_data(settings)
    labels = np.rint(np.asarray(y_val)).astype(int).ravel()
    return np.bincount(labels) / labels.size


def baseline_text(shares):
    """The accuracy of predicting the most frequent depth (background) at
    every pixel of the validation set (`depth_shares`): what the accuracies
    are read against."""
    return (
        f"- Baseline: predicting depth {int(shares.argmax())} (background) at every pixel scores "
        f"{100 * shares.max():.2f}% validation pixel accuracy; depth shares "
        f"[{', '.join(f'{x:.3f}' for x in shares)}]. A run \"stuck\" near the constant predictor of the "
        "mean depth scores less, and a best stable lr whose runs are stuck is no better than that."
    )


# What a run's settings hold beyond its scale's: they differ across a table by
# design (each row is a configuration, lr and weight decay; seeds are pooled).
PER_RUN_SETTINGS = frozenset(
    ("config", "label", "host", "host_arguments", "sing_arguments", "learning_rate", "weight_decay", "seed")
)


def mixed_settings(runs):
    """The scale-level settings (data, model, training: every setting not in
    `PER_RUN_SETTINGS`) whose value differs between `runs`: the tables would
    mix them."""
    keys = sorted({k for r in runs for k in r["settings"]} - PER_RUN_SETTINGS)
    return [k for k in keys if len({json.dumps(r["settings"].get(k), sort_keys=True) for r in runs}) > 1]


def setup_text(runs, scale, shares):
    """Scale, data, model, hardware, commits and time spent, from the runs."""
    if not runs:
        return f"No runs of scale `{scale}` are present yet: every row says \"not run\"."
    s0 = runs[0]["settings"]
    shape = s0["vit_shape"]
    envs = [r["environment"] for r in runs]
    commits = sorted({(e["git_commit"][:12], e["git_dirty"]) for e in envs})
    hours = sum(r["results"]["wall_seconds"] for r in runs) / 3600
    created = sorted(r["created"] for r in runs)
    distinct = lambda key: ", ".join(sorted({str(e.get(key)) for e in envs}))  # noqa: E731
    lines = [
        f"- Scale `{scale}`: {s0['train_samples']:,} train / {s0['val_samples']:,} validation RDE-like images of "
        f"{s0['image_size']}px with {s0['num_rectangles']} rectangles (data seed {s0['data_seed']}), "
        f"{s0['loss'].upper()} loss, {s0['epochs']} epochs of batch {s0['batch_size']} ({s0['steps']} steps), "
        f"{s0['schedule']}.",
        f"- Model: KerasHub `ViTBackbone` `{s0['size']}` ({shape['num_layers']} layers, {shape['num_heads']} heads, "
        f"width {shape['hidden_dim']}, MLP {shape['mlp_dim']}, patch {s0['patch_size']}), random init, per-patch "
        f"linear decoder; {runs[0]['results']['parameters']:,} parameters.",
        f"- Hardware: {distinct('device')} ({distinct('processor')}, {distinct('cpu_count')} cores, {distinct('platform')}).",
        f"- Software: backend {distinct('backend')}; keras {distinct('keras')}, keras-hub {distinct('keras_hub')}, "
        f"keras_sing {distinct('keras_sing')}, Python {distinct('python')}.",
        "- Code: commit " + ", ".join(f"`{c}`" + (" (code modified: dirty)" if d else "") for c, d in commits) + ".",
        f"- Budget: {len(runs)} runs, {hours:.2f} hours of wall time in all, run between {created[0]} and {created[-1]}.",
    ]
    extended = extended_lrs(runs, scale)
    if extended:
        lines.append(
            "- Grids extended where the best stable lr sat at an edge, as the paper does (`rde_study.py --extend`): "
            + "; ".join(f"{name} + lr {', '.join(f'{lr:g}' for lr in lrs)}" for name, lrs in sorted(extended.items()))
            + "."
        )
    lines.append(baseline_text(shares))
    mixed = mixed_settings(runs)
    if mixed:
        lines.append(f"- Warning: the runs differ in {', '.join(mixed)}; the tables mix them.")
    return "\n".join(lines)


def figure_links(figures, md_path):
    rel = {k: os.path.relpath(v, md_path.parent) for k, v in figures.items()}
    return "\n\n".join([
        f"![final accuracy vs learning rate]({rel['lr']})",
        f"![loss curves with spikes]({rel['loss']})",
        f"![ablation and hosts]({rel['bars']})",
    ])


def render(runs, scale, md_path, figures):
    """The Markdown page (figures written when there are runs)."""
    s = summarize(runs)
    for name, by_setting in settings_of(runs).items():
        for key, rs in by_setting.items():
            s[name]["settings"][key]["runs"] = rs
    shares = depth_shares(runs[0]["settings"]) if runs else None
    parts = [
        "# When does SING beat AdamW? RDE-like depth estimation",
        "Generated by `benchmarks/rde_report.py` from the run JSONs of `benchmarks/rde_study.py` "
        "(issue 12); do not edit by hand. The paper: Courtois et al., *SING: A Plug-and-Play DNN "
        "Learning Technique*, arXiv 2305.15997 (ViT-S on RDE, 50K 128x128 images, MSE on depth, 100 "
        "epochs, batch 512, 5% warm-up then cosine). Its numbers below are the ones quoted in issue 12. "
        "RDE's generator is not public: ours is *RDE-like* (`keras_sing.datasets.rde`), so only the "
        "trends can be compared, and a small scale is far from the paper's budget.",
        "## Setup\n\n" + setup_text(runs, scale, shares),
        "## Definitions\n\n" + "\n".join(f"- **{k.replace('_', ' ')}**: {v}." for k, v in rde_study.RUN_DEFINITIONS.items())
        + "\n- **± in the tables**: the sample standard deviation over seeds (none with one seed).",
        "## Table 1: AdamW vs SING(AdamW)\n\n" + table1(s) + f"\n\nPaper, also: {PAPER_VIT_B}.",
        "## Table 2: ablation, both directions\n\n" + table2(s)
        + "\n\nThe `AdamW + part` rows keep AdamW's weight decay (0.05, on the same variables: "
        "`weight_decay_mode=\"host\"`); SING and the `SING - part` rows use 0.005 on ndim > 1 variables.",
        "## Table 3: other hosts\n\n" + table3(s),
        "## Answers in plain words\n\n" + answers(s, len(runs), scale, None if shares is None else shares.max()),
        "## Every setting\n\n" + all_settings_table(s),
    ]
    if runs:
        plot_lr_sensitivity(s, figures["lr"])
        plot_loss_curves(s, figures["loss"])
        plot_bars(s, figures["bars"])
        parts.insert(-1, "## Figures\n\n" + figure_links(figures, md_path))
    parts.append(
        "## Reproduce\n\n```bash\n"
        f"python benchmarks/rde_study.py --scale {scale} --dry-run     # the plan and its time estimate\n"
        f"python benchmarks/rde_study.py --scale {scale} --max-minutes 110   # resumable: rerun to go on\n"
        f"python benchmarks/rde_study.py --scale {scale} --extend 2   # more lrs where a best stable lr sits at an edge\n"
        f"python benchmarks/rde_report.py --scale {scale}\n```\n\n"
        "Scales: `smoke` (CI), `cpu` (~2 hours on a 2-core CPU), `gpu` (~20 minutes on one H100, "
        "estimated), `paper` (the paper's setting); see `benchmarks/rde_study.py`."
    )
    return "\n\n".join(parts) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(rde_study.SCALES), default="cpu")
    p.add_argument("--runs", default=None, help="folder of run JSONs; default docs/results/rde_study/<scale>")
    p.add_argument("--md", default=None, help="default docs/results.md")
    p.add_argument("--figures", default=None, help="folder of the PNGs; default docs/results/rde_study")
    return p.parse_args(argv)


def main(argv=None):
    """Writes the page and figures; returns the page's path."""
    args = parse_args(argv)
    runs_dir = pathlib.Path(args.runs) if args.runs else rde_study.RESULTS / args.scale
    md_path = pathlib.Path(args.md) if args.md else REPO / "docs" / "results.md"
    fig_dir = pathlib.Path(args.figures) if args.figures else rde_study.RESULTS
    runs = load_runs(runs_dir)
    figures = {k: fig_dir / f"{args.scale}_{v}.png" for k, v in
               (("lr", "lr_sensitivity"), ("loss", "loss_curves"), ("bars", "ablation_hosts"))}
    if runs:
        fig_dir.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render(runs, args.scale, md_path, figures))
    print(f"wrote {md_path} from {len(runs)} runs in {runs_dir}" + (f", figures in {fig_dir}" if runs else ""))
    return md_path


if __name__ == "__main__":
    main()
