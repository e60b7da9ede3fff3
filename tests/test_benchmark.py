"""The benchmark's short mode runs on the current backend and reports ratios
(tests time nothing: the numbers are in docs/performance.md)."""

import importlib.util
import json
import pathlib

BENCH = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_optimizer.py"


def test_benchmark_short_mode(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_optimizer", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--short", "--param-sets", "small", "--hosts", "adamw,sgd", "--train-models", "resnet", "--reps", "2",
                       "--train-image-size", "24", "--train-batch-size", "4", "--interleave", "--out", str(tmp_path)]) == 0
    (result,) = list(tmp_path.glob("*_short.json"))
    payload = json.loads(result.read_text())
    rows = payload["optimizer_step"]
    assert {(r["host"], r["variant"]) for r in rows} == {(h, v) for h in ("adamw", "sgd") for v in ("host", "sing_no_lookahead", "sing")}
    for r in rows:
        assert r["median_ms"] > 0 and r["mean_ms"] > 0 and r["ratio_vs_host"] > 0 and r["mean_ratio_vs_host"] > 0
        # optimizer state: SING adds only the LookAhead slot (4 B/param)
        host = next(x for x in rows if x["host"] == r["host"] and x["variant"] == "host")
        extra = r["state_bytes_per_param"] - host["state_bytes_per_param"]
        if r["variant"] == "sing":  # the slot is there, and nothing else
            assert 3.5 < extra < 4.5, extra
        else:
            assert abs(extra) < 0.5, extra
    assert [r["variant"] for r in payload["train_step"]] == ["host", "sing"]
    assert {(r["image_size"], r["batch_size"]) for r in payload["train_step"]} == {(24, 4)}
    floor = payload["jnp_floor"]  # the hand-written jnp reference: JAX only
    expected = ["jnp_adamw", "jnp_sing_no_lookahead", "jnp_sing"] if payload["environment"]["backend"] == "jax" else []
    assert [r["variant"] for r in floor] == expected
    assert all(r["median_ms"] > 0 and r["mean_ms"] > 0 for r in floor)
    # --interleave: each Keras step next to its floor, timed in turns (JAX only)
    interleaved = payload["interleaved"]
    pairs = [("host", "jnp_adamw"), ("sing_no_lookahead", "jnp_sing_no_lookahead"), ("sing", "jnp_sing")]
    assert [(r["variant"], r["floor"]) for r in interleaved] == (pairs if expected else [])
    for r in interleaved:
        assert abs(r["ratio_vs_floor"] / (r["median_ms"] / r["floor_median_ms"]) - 1) < 1e-2
    assert "SING/host" in (tmp_path / result.name.replace(".json", ".md")).read_text()
