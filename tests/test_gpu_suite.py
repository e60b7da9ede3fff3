"""The GPU suite's dry run (benchmarks/gpu_suite.sh --dry-run) on the current
backend: CPU sizes, the JSON schema the GPU run will write, and TensorFlow's
refusal (the GPU machine has no TensorFlow). Times nothing: the dry run's
numbers are CPU numbers and flagged as such."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import BACKEND

ROOT = pathlib.Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"
TABLES = ROOT / "benchmarks" / "gpu_tables.py"


def run_suite(out, *args):
    env = dict(os.environ, PYTHON=sys.executable, KERAS_BACKEND=BACKEND)
    return subprocess.run(["bash", str(SUITE), "--out", str(out), "--backend", BACKEND, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's refusal")
def test_gpu_suite_refuses_tensorflow(tmp_path):
    proc = run_suite(tmp_path, "--dry-run", "--skip-tests")
    assert proc.returncode != 0
    assert "TensorFlow cannot be measured on the GPU machine" in proc.stdout + proc.stderr
    assert not (tmp_path / "tensorflow.json").exists()


@pytest.mark.skipif(BACKEND == "tensorflow", reason="the GPU suite runs on JAX and torch only")
def test_gpu_suite_dry_run(tmp_path):
    # Every measurement part, narrowed to keep CI short: two hosts, one model,
    # peak memory of the optimizer step only (each probe is a new process).
    # The in-suite tests part is left out (this suite is running already).
    proc = run_suite(tmp_path, "--dry-run", "--skip-tests", "--hosts", "adamw,sgd", "--models", "resnet",
                     "--train-image-size", "16", "--memory", "step")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    payload = json.loads((tmp_path / f"{BACKEND}.json").read_text())
    assert payload["dry_run"] is True and payload["backend"] == BACKEND
    assert isinstance(payload["device"], str) and payload["device"]
    assert "gpu_suite.sh" in payload["command"] and "--dry-run" in payload["command"]
    assert {"python", "keras", "keras_sing", "keras_hub", "commit"} <= set(payload["versions"])
    assert BACKEND in payload["versions"]
    assert "tests" not in payload
    rows = payload["results"]
    for r in rows:
        assert {"name", "value", "host_value", "ratio", "target", "unit"} <= set(r), r
        assert r["value"] > 0 and r["host_value"] > 0 and r["ratio"] > 0 and r["target"] > 0, r
        assert abs(r["ratio"] - r["value"] / r["host_value"]) < 1e-3 * r["ratio"]
        assert r["met"] == (r["ratio"] <= r["target"])
    names = {r["name"] for r in rows}
    expected = {f"optimizer_step/small/{d}/{h}/{v}" for d in ("float32", "bfloat16") for h in ("adamw", "sgd")
                for v in ("sing_no_lookahead", "sing")}
    expected |= {"train_step/resnet", "first_step/resnet", "peak_memory/step/small"}
    if BACKEND == "torch":
        expected |= {n for n in names if n.startswith("optimizer_step/small/")
                     and "/published_torch_style/" in n}
        assert sum("/published_torch_style/" in n for n in names) == 2  # float32 and bfloat16
    assert names == expected
    targets = {r["name"]: r["target"] for r in rows}
    lookahead, plain = {"jax": (1.5, 1.3), "torch": (1.7, 1.5)}[BACKEND]
    assert targets["optimizer_step/small/float32/adamw/sing"] == lookahead
    assert targets["optimizer_step/small/float32/adamw/sing_no_lookahead"] == plain
    assert targets["train_step/resnet"] == 1.03 and targets["first_step/resnet"] == 1.5
    memory = next(r for r in rows if r["name"] == "peak_memory/step/small")
    assert memory["bound_bytes"] == memory["host_value"] + 4 * memory["params"]
    # The Markdown says it is a dry run; the docs' table tool refuses it.
    assert "DRY RUN" in (tmp_path / f"{BACKEND}.md").read_text()
    tables = subprocess.run([sys.executable, str(TABLES), str(tmp_path / f"{BACKEND}.json")], capture_output=True, text=True)
    assert tables.returncode != 0 and "dry run" in tables.stderr
    merged = tmp_path / "merged.json"
    subprocess.run([sys.executable, str(TABLES), str(tmp_path / f"{BACKEND}.json"), "--merge", str(merged)], check=True)
    assert [r["name"] for r in json.loads(merged.read_text())["results"]] == [r["name"] for r in rows]
