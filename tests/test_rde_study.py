"""The RDE study (issue 12): its smoke scale on the current backend, resume,
the report, and the spike / divergence / stuck definitions.

The smoke scale trains two tiny ViTs (AdamW and SING, 4 steps each) into a
temporary folder; nothing is written under docs/. No network is used.
"""

import json
import pathlib
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "benchmarks"))
import rde_report  # noqa: E402
import rde_study  # noqa: E402

SMOKE = ["--scale", "smoke"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("rde_smoke")
    summary = rde_study.main([*SMOKE, "--out", str(out)])
    return out, summary


def payloads(out):
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


# --------------------------------------------------------------------------
# The runner, on the current backend.
# --------------------------------------------------------------------------


def test_smoke_writes_one_complete_json_per_run(smoke):
    out, summary = smoke
    runs = payloads(out)
    assert sorted(runs) == sorted(summary["ran"]) == sorted(summary["planned"])
    assert sorted(runs) == ["adamw_lr0.001_wd0.05_seed0.json", "sing_lr0.01_wd0.005_seed0.json"]
    for run in runs.values():
        s, res, env = run["settings"], run["results"], run["environment"]
        assert run["schema"] == rde_study.SCHEMA and run["seed"] == s["seed"] == 0
        assert s["config"] in ("adamw", "sing") and s["scale"] == "smoke" and s["loss"] == "mse"
        assert {"image_size", "patch_size", "num_rectangles", "train_samples", "epochs", "batch_size",
                "learning_rate", "weight_decay", "host_arguments", "sing_arguments", "vit_shape"} <= set(s)
        assert env["backend"] == keras.backend.backend()
        assert env[env["backend"]] and env["keras"] == keras.__version__ and env["keras_hub"]
        assert env["git_commit"] and env["git_dirty"] in (True, False, None)
        assert env["keras_sing_from_this_checkout"]
        assert set(run["definitions"]) >= {"spike", "divergence", "stuck", "pixel_accuracy", "best_stable_lr"}
        # every step recorded; 64 images / batch 16 = 4 steps
        assert len(res["step_loss"]) == s["steps"] == 4
        assert all(np.isfinite(res["step_loss"]))
        # the per-step losses average back to Keras's epoch loss (equal batches)
        np.testing.assert_allclose(np.mean(res["step_loss"]), res["epoch_train_loss"][0], rtol=1e-4)
        assert len(res["val_pixel_accuracy"]) == s["epochs"] == 1
        assert 0.0 <= res["final_val_pixel_accuracy"] <= res["best_val_pixel_accuracy"] <= 1.0
        assert res["diverged"] is False and res["divergence_reason"] is None
        # the schema only: a 4-step run cannot spike (a spike needs the 20
        # steps before it); the definition is tested on planted losses below
        assert res["spikes"] == [] and res["spike_count"] == 0
        assert res["wall_seconds"] > 0 and res["parameters"] > 0
        assert res["constant_predictor_loss"] > 0
        if s["config"] == "sing":
            assert s["sing_arguments"] == {"centralize": True, "normalize": True, "lookahead": True, "softplus": True}
            assert res["skipped_steps"] == 0
        else:
            assert s["sing_arguments"] is None and res["skipped_steps"] is None


def test_rerun_skips_the_runs_already_done(smoke):
    out, _ = smoke
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    summary = rde_study.main([*SMOKE, "--out", str(out)])
    assert summary["ran"] == [] and summary["todo"] == []
    assert sorted(summary["skipped"]) == sorted(before)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == before


def test_a_json_with_other_settings_is_a_conflict(smoke, tmp_path):
    out, _ = smoke
    name = "adamw_lr0.001_wd0.05_seed0.json"
    run = json.loads((out / name).read_text())
    run["settings"]["epochs"] = 2
    (tmp_path / name).write_text(json.dumps(run))
    summary = rde_study.main([*SMOKE, "--configs", "adamw", "--out", str(tmp_path), "--dry-run"])
    assert summary["conflicts"] == [name] and summary["todo"] == []
    summary = rde_study.main([*SMOKE, "--configs", "adamw", "--out", str(tmp_path), "--dry-run", "--overwrite"])
    assert summary["conflicts"] == [] and summary["todo"] == [name]


def test_max_minutes_stops_before_a_run_that_would_not_fit(tmp_path):
    summary = rde_study.main([*SMOKE, "--out", str(tmp_path), "--max-minutes", "0"])
    assert summary["stopped_early"] and summary["ran"] == []
    assert list(tmp_path.glob("*.json")) == []


def test_a_nan_run_is_recorded_as_diverged(tmp_path):
    summary = rde_study.main([*SMOKE, "--configs", "sgd", "--lrs", "1e9", "--out", str(tmp_path)])
    (run,) = payloads(tmp_path).values()
    assert summary["ran"] == ["sgd_lr1e09_wd0.0005_seed0.json"]
    res = run["results"]
    assert res["diverged"] and res["divergence_reason"] == "nonfinite"
    assert res["step_loss"][res["divergence_step"]] is None  # NaN stored as null
    assert 0.0 <= res["final_val_pixel_accuracy"] <= 1.0


def test_cpu_plan_and_estimate(tmp_path, capsys):
    summary = rde_study.main(["--scale", "cpu", "--out", str(tmp_path), "--dry-run"])
    assert len(summary["planned"]) == len(set(summary["planned"])) == 88
    assert sum(n.startswith(("adamw_lr", "sing_lr")) for n in summary["planned"]) == 24  # 2 x 4 lrs x 3 seeds
    assert list(tmp_path.iterdir()) == []
    assert "estimate: 88 runs" in capsys.readouterr().out


def test_config_names_and_switches():
    c = rde_study.CONFIGS
    assert set(rde_study.GROUPS["ablation"]) == {
        "adamw+norm", "adamw+central", "adamw+lookahead", "adamw+softplus",
        "sing-norm", "sing-central", "sing-lookahead", "sing-softplus"}
    assert c["adamw+norm"].sing == {"centralize": False, "normalize": True, "lookahead": False,
                                   "softplus": False, "weight_decay_mode": "host"}
    assert c["sing-lookahead"].sing == {"centralize": True, "normalize": True, "lookahead": False, "softplus": True}
    assert c["sing(sgd)"].sing["softplus"] is None  # softplus is Adam-only
    assert len({x.slug for x in c.values()}) == len(c)
    assert all(set(x.slug) <= set("abcdefghijklmnopqrstuvwxyz_") for x in c.values())


# --------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------


def test_report_renders_the_smoke_runs(smoke, tmp_path):
    out, _ = smoke
    md = rde_report.main(["--scale", "smoke", "--runs", str(out), "--md", str(tmp_path / "results.md"),
                          "--figures", str(tmp_path / "figures")])
    text = md.read_text()
    for heading in ("## Table 1", "## Table 2", "## Table 3", "## Answers in plain words", "## Every setting"):
        assert heading in text
    assert "| AdamW | 0.001 |" in text and "| SING(AdamW) | 0.01 |" in text
    assert "| SING - LookAhead |" not in text and "| SING - lookahead |" in text
    assert "| SING - lookahead | centralize=True, normalize=True, lookahead=False, softplus=True | not run |" in text
    assert "not run: Keras has no AdaBelief" in text
    assert f"backend {keras.backend.backend()}" in text
    for png in ("smoke_lr_sensitivity.png", "smoke_loss_curves.png", "smoke_ablation_hosts.png"):
        assert (tmp_path / "figures" / png).stat().st_size > 5000
        assert f"figures/{png}" in text


def fake_run(config, lr, seed, acc, losses, wd=None):
    """A run JSON as the runner writes it, without training."""
    cfg = rde_study.CONFIGS[config]
    return {
        "schema": rde_study.SCHEMA,
        "seed": seed,
        "settings": {"scale": "cpu", "loss": "mse", "size": "tiny", "image_size": 32, "patch_size": 4,
                     "vit_shape": {"num_layers": 4, "num_heads": 4, "hidden_dim": 64, "mlp_dim": 128},
                     "num_rectangles": 5, "train_samples": 2048, "val_samples": 512, "data_seed": 0,
                     "epochs": 6, "batch_size": 32, "steps": len(losses), "schedule": "s", "config": config,
                     "learning_rate": lr, "weight_decay": cfg.weight_decay if wd is None else wd},
        "results": {"final_val_pixel_accuracy": acc, "best_val_pixel_accuracy": acc, "step_loss": losses,
                    "constant_predictor_loss": 1.3, "wall_seconds": 60.0, "parameters": 1000, "skipped_steps": None},
        "environment": {"backend": "jax", "git_commit": "0123456789abcdef", "git_dirty": False, "device": "cpu",
                        "processor": "x86_64", "cpu_count": 2, "platform": "linux", "keras": "3", "keras_hub": "0",
                        "keras_sing": "0", "python": "3"},
        "created": f"2026-01-01T00:00:0{seed}",
    }


def test_report_picks_the_best_stable_lr_and_judges_against_the_spread(tmp_path):
    good = list(np.linspace(1.3, 0.6, 100))
    nan = good[:50] + [None]
    runs = [
        *(fake_run("adamw", 1e-3, s, a, good) for s, a in enumerate((0.70, 0.72, 0.71))),
        # higher accuracy, but one seed diverged: not stable
        fake_run("adamw", 1e-2, 0, 0.95, good), fake_run("adamw", 1e-2, 1, 0.94, good),
        fake_run("adamw", 1e-2, 2, 0.0, nan),
        *(fake_run("sing", 1e-2, s, a, good) for s, a in enumerate((0.80, 0.81, 0.79))),
        *(fake_run("sing", 5e-2, s, a, good) for s, a in enumerate((0.75, 0.76, 0.74))),
        fake_run("sgd", 0.1, 0, 0.40, good), fake_run("sing(sgd)", 0.3, 0, 0.405, good),
    ]
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for i, r in enumerate(runs):
        (runs_dir / f"{i}.json").write_text(json.dumps(r))
    s = rde_report.summarize(rde_report.load_runs(runs_dir))
    assert s["adamw"]["best"] == (1e-3, 0.05) and s["adamw"]["diverged_lrs"] == [1e-2]
    assert s["sing"]["best"] == (1e-2, 0.005) and s["sing"]["stable_lrs"] == [1e-2, 5e-2]
    text = rde_report.main(["--scale", "cpu", "--runs", str(runs_dir), "--md", str(tmp_path / "r.md"),
                            "--figures", str(tmp_path / "f")]).read_text()
    assert "| AdamW | 0.001 | 71.00% ± 1.00 (3 seeds) |" in text
    assert "SING is ahead by 9.00 points, clearly beyond the seed spread" in text
    assert "diverged at 0.01" in text
    # the recipes' weight decays differ: same-lr pairs are matched on the lr
    assert "- At the same lr 0.01: AdamW 63.00% ± 54.56 (3 seeds) (wd 0.05), SING 80.00% ± 1.00 (3 seeds) (wd 0.005)." in text
    # the trivial baseline of the cpu scale's validation set, and both against it
    assert "predicting depth 0 (background) at every pixel scores 62.88%" in text
    assert "Against predicting background at every pixel (62.88%): AdamW +8.12 points, SING +17.12 points." in text
    # SGD: +0.5 point with one seed each: no clear winner, listed where SING does not help
    assert "SING(SGD) vs SGD (momentum 0.9): +0.50 points (under 1 point with a single seed" in text
    assert "| Adafactor | not run | not run |" in text


def test_report_warns_when_the_runs_mix_scale_settings():
    losses = list(np.linspace(1.3, 0.6, 100))
    same = [fake_run("adamw", 1e-3, 0, 0.7, losses), fake_run("sing", 1e-2, 1, 0.8, losses, wd=0.05)]
    # configurations, lrs, weight decays and seeds differ by design
    assert rde_report.mixed_settings(same) == []
    other = fake_run("adamw", 1e-3, 2, 0.7, losses)
    other["settings"].update(batch_size=64, num_rectangles=6)
    other["settings"]["vit_shape"] = {**other["settings"]["vit_shape"], "num_layers": 6}
    mixed = [*same, other]
    assert rde_report.mixed_settings(mixed) == ["batch_size", "num_rectangles", "vit_shape"]
    shares = np.array([0.6, 0.4])
    assert "Warning" not in rde_report.setup_text(same, "cpu", shares)
    assert "- Warning: the runs differ in batch_size, num_rectangles, vit_shape; the tables mix them." in (
        rde_report.setup_text(mixed, "cpu", shares)
    )


def test_report_without_runs_is_a_skeleton(tmp_path):
    text = rde_report.main(["--scale", "cpu", "--runs", str(tmp_path / "none"), "--md", str(tmp_path / "r.md"),
                            "--figures", str(tmp_path / "f")]).read_text()
    assert "No runs of scale `cpu` are present yet" in text
    assert "| AdamW | not run |" in text and "## Figures" not in text
    assert not (tmp_path / "f").exists()


# --------------------------------------------------------------------------
# The definitions, on synthetic loss sequences.
# --------------------------------------------------------------------------


def noisy(n, level=1.0, seed=0, noise=0.2):
    """A flat loss with +-`noise` relative uniform noise."""
    rng = np.random.default_rng(seed)
    return list(level * (1 + rng.uniform(-noise, noise, n)))


def test_noise_is_not_a_spike():
    assert rde_study.loss_spikes(noisy(300)) == []
    decreasing = [2.0 * 0.99**t * (1 + 0.2 * np.sin(t)) for t in range(300)]
    assert rde_study.loss_spikes(decreasing) == []


def test_a_jump_is_one_spike_however_long():
    losses = noisy(200)
    losses[50] = 5.0
    assert rde_study.loss_spikes(losses) == [50]
    losses[51] = losses[52] = 5.0
    assert rde_study.loss_spikes(losses) == [50]
    losses[120] = 4.0
    assert rde_study.loss_spikes(losses) == [50, 120]


def test_spikes_ignore_the_warm_up_window_and_tiny_absolute_jumps():
    losses = noisy(100)
    losses[5] = 10.0  # inside the first WINDOW steps
    assert rde_study.loss_spikes(losses) == []
    # 10x jumps of a loss near 0 (below FLOOR x the initial loss) are noise
    low = noisy(30, 1.0) + noisy(100, 1e-4, seed=1)
    low[80] = 1e-3
    assert rde_study.loss_spikes(low) == []
    low[80] = 0.5  # the same position, a jump of half the initial loss
    assert rde_study.loss_spikes(low) == [80]


def test_nonfinite_loss_is_divergence_not_a_spike():
    losses = noisy(100)
    losses[60] = float("nan")
    assert rde_study.divergence(losses) == ("nonfinite", 60)
    assert rde_study.loss_spikes(losses) == []
    losses[60] = None  # as stored in JSON
    assert rde_study.divergence(losses) == ("nonfinite", 60)
    losses[60] = float("inf")
    assert rde_study.divergence(losses) == ("nonfinite", 60)


def test_a_loss_that_does_not_recover_is_divergence():
    learning = [2.0 * 0.98**t for t in range(100)]  # down to ~0.27
    assert rde_study.divergence(learning + noisy(100, 0.27)) == (None, None)
    # blows up at step 150 and stays up (the final tail, 20 steps, is high)
    unrecovered = learning + noisy(50, 0.27) + noisy(50, 1.5, seed=2)
    assert rde_study.divergence(unrecovered) == ("unrecovered", 150)
    # a spike that comes back down is a spike, not divergence
    recovered = learning + noisy(30, 0.27) + noisy(20, 1.5, seed=2) + noisy(50, 0.3, seed=3)
    assert rde_study.divergence(recovered) == (None, None)
    assert len(rde_study.loss_spikes(recovered)) == 1
    # too short to judge recovery
    assert rde_study.divergence([1.0] * 20 + [5.0] * 10) == (None, None)


def test_stuck_means_no_better_than_the_constant_predictor():
    assert rde_study.is_stuck(noisy(100, 1.25), constant_predictor_loss=1.3)
    assert not rde_study.is_stuck(noisy(100, 0.6), constant_predictor_loss=1.3)
    assert not rde_study.is_stuck(noisy(100, 1.25)[:-1] + [None], constant_predictor_loss=1.3)
    labels = np.array([0, 0, 1, 3])
    assert rde_study.constant_predictor_loss(labels, 4, "mse") == pytest.approx(np.var(labels))
    assert rde_study.constant_predictor_loss(labels, 4, "ce") == pytest.approx(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)))


def test_best_stable_lr_and_grid_extension():
    rows = [
        {"learning_rate": 1e-3, "final_val_pixel_accuracy": 0.7, "diverged": False},
        {"learning_rate": 1e-2, "final_val_pixel_accuracy": 0.9, "diverged": False},
        {"learning_rate": 1e-2, "final_val_pixel_accuracy": 0.9, "diverged": True},
        {"learning_rate": 5e-3, "final_val_pixel_accuracy": 0.8, "diverged": False},
    ]
    assert rde_study.best_stable_lr(rows) == 5e-3
    assert rde_study.extension_lr(rows) is None  # best inside the grid
    rows[2]["diverged"] = False
    assert rde_study.best_stable_lr(rows) == 1e-2
    assert rde_study.extension_lr(rows) == 5e-2  # top edge: 1, 5 ladder goes on
    assert rde_study.next_lr([5e-3, 1e-2, 5e-2, 1e-1], +1) == 0.5
    assert rde_study.next_lr([5e-3, 1e-2, 5e-2, 1e-1], -1) == 1e-3
    assert rde_study.next_lr([1e-2, 3e-2, 1e-1, 3e-1], +1) == 1.0
    assert rde_study.extension_lr([dict(r, diverged=True) for r in rows]) == 5e-4  # none stable: go down
