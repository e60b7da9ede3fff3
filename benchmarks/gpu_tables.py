"""Markdown tables from the GPU suite's JSON (benchmarks/gpu_suite.py).

    python benchmarks/gpu_tables.py                     # docs/results/gpu/{jax,torch}.json -> Markdown on stdout
    python benchmarks/gpu_tables.py A/jax.json B/jax.json --merge docs/results/gpu/jax.json

The first form prints the tables for docs/performance.md's "GPU" section.
It refuses dry-run files (CPU numbers from `--dry-run`) unless
`--allow-dry-run`, so they cannot end up in the docs as GPU results. The
second merges the JSON of several commands of one campaign (the suite split
into parts that each fit the GPU machine's time limit) into one file: rows
by name, later files winning; all inputs must be of one backend, device and
mode. Standard library only.
"""

import argparse
import json
import pathlib
import sys

DEFAULT_DIR = pathlib.Path(__file__).resolve().parent.parent / "docs" / "results" / "gpu"


def _fmt(value, unit):
    if unit == "bytes":
        return f"{value / 2**30:.3f} GiB" if value >= 2**28 else f"{value / 2**20:.1f} MiB"
    return f"{value:.3f} ms" if value < 100 else f"{value:.0f} ms"


def markdown(payload):
    """One Markdown section for one backend's JSON."""
    v = payload.get("versions", {})
    framework = f"jax {v['jax']}" if "jax" in v else f"torch {v.get('torch')} (CUDA {v.get('cuda')})"
    title = f"### {payload['backend']} on {payload['device']}"
    lines = [title + (" — DRY RUN (CPU sizes; not GPU results)" if payload.get("dry_run") else ""), ""]
    lines.append(f"keras {v.get('keras')}, keras_hub {v.get('keras_hub')}, keras_sing {v.get('keras_sing')} "
                 f"(commit {v.get('commit')}), {framework}, Python {v.get('python')}. "
                 f"Command: `{payload.get('command')}`" + (f" (and {len(payload['commands']) - 1} more, merged)" if len(payload.get("commands") or []) > 1 else "") + ".")
    tests = payload.get("tests")
    if tests:
        lines += ["", f"Golden and core tests on this device: {tests.get('summary')} (rc {tests.get('rc')})."]
    rows = payload.get("results", [])
    if rows:
        lines += ["", "| measurement | SING | host | ratio | target | |", "|---|---|---|---|---|---|"]
        for r in rows:
            note = " (AdamW's, for reference)" if r.get("target_note") else ""
            verdict = "met" if r["ratio"] <= r["target"] else f"MISSED by {r['ratio'] / r['target'] - 1:.0%}"
            lines.append(f"| {r['name']} | {_fmt(r['value'], r['unit'])} | {_fmt(r['host_value'], r['unit'])} | "
                         f"{r['ratio']:.3f} | <= {r['target']}{note} | {verdict} |")
        lines += ["", "Ratios of means (optimizer and train steps: LookAhead's sync amortized over its cycle); "
                      "peak memory's target is AdamW's peak plus one float32 copy of the weights, over AdamW's peak."]
    return "\n".join(lines) + "\n"


def merge(paths):
    payloads = [json.loads(pathlib.Path(p).read_text()) for p in paths]
    first = payloads[0]
    for p, other in zip(paths, payloads, strict=True):
        for key in ("backend", "device", "dry_run"):
            if other.get(key) != first.get(key):
                sys.exit(f"gpu_tables: {p} has {key}={other.get(key)!r}, {paths[0]} has {first.get(key)!r}: not one campaign")
    merged = dict(payloads[-1])
    by_name = {}
    for other in payloads:
        for r in other.get("results", []):
            by_name.pop(r["name"], None)
            by_name[r["name"]] = r
    merged["results"] = list(by_name.values())
    merged["tests"] = next((o["tests"] for o in reversed(payloads) if o.get("tests")), None)
    merged["commands"] = [c for o in payloads for c in (o.get("commands") or [o.get("command")])]
    merged["versions_per_run"] = [o.get("versions") for o in payloads]
    return merged


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help=f"default: {DEFAULT_DIR}/{{jax,torch}}.json")
    parser.add_argument("--merge", metavar="OUT", help="merge FILES (one backend) into OUT instead of printing tables")
    parser.add_argument("--allow-dry-run", action="store_true", help="print tables of dry-run files too (flagged)")
    args = parser.parse_args(argv)
    if args.merge:
        if not args.files:
            parser.error("--merge needs input files")
        out = pathlib.Path(args.merge)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(merge(args.files), indent=1) + "\n")
        print(f"merged {len(args.files)} file(s) into {out}")
        return 0
    files = args.files or [p for p in (DEFAULT_DIR / "jax.json", DEFAULT_DIR / "torch.json") if p.exists()]
    if not files:
        sys.exit(f"gpu_tables: no JSON given and none in {DEFAULT_DIR} (no GPU run has been recorded yet)")
    for path in files:
        payload = json.loads(pathlib.Path(path).read_text())
        if payload.get("dry_run") and not args.allow_dry_run:
            sys.exit(f"gpu_tables: {path} is a dry run (CPU sizes, not GPU results); pass --allow-dry-run to print it anyway")
        print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
