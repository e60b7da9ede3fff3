# Pools main's JAX first-step turns across the batch logs (SING at main's JAX program against AdamW of the
# same turn): per log, then all together, with a bootstrap 90% interval over turns. A/B logs name each
# SING run's code after its turn; only main's is taken. Run from the repository root:
#   .venv/bin/python docs/results/first_step/pool_batches.py
import collections, json, os, random
HERE = os.path.dirname(os.path.abspath(__file__))
# (log, SING code label of main's program); a header after runs starts a new batch within a log
LOGS = {
    "transformer": [("jax_turns_eighth.log", ""), ("jax_turns_ninth.log", ""), ("jax_skip_inside_tenth.log", "/tmp/base"),
                    ("jax_grouped_statistics_eleventh.log", "/work/main"), ("jax_turns_eleventh.log", "/work/main"),
                    ("jax_turns_twelfth.log", "")],
    "resnet50": [("jax_turns_eighth.log", ""), ("jax_resnet50_turns_twelfth.log", "")],
}
ratio = lambda pairs: sum(s for s, _ in pairs) / sum(a for _, a in pairs)
for model, logs in LOGS.items():
    pooled = []
    for name, code in logs:
        batch, after_runs, turns = 0, False, collections.defaultdict(dict)
        for line in open(os.path.join(HERE, name)):
            if not line.startswith("{"):
                batch, after_runs = (batch + 1, False) if after_runs else (batch, after_runs)
                continue
            run, after_runs = json.loads(line), True
            turn, _, run_code = run["label"].partition(" ")
            if run["model"] != model:
                continue
            if run["opt"] == "adamw":
                turns[(batch, turn)]["adamw"] = run["first"]
            elif run["opt"] == "sing" and run_code == code:
                turns[(batch, turn)]["sing"] = run["first"]
        pairs = [(d["sing"], d["adamw"]) for d in turns.values() if len(d) == 2]
        print(f"{model} {name}: {len(pairs)} turns, pooled {ratio(pairs):.2f}x")
        pooled += pairs
    rng = random.Random(0)
    boots = sorted(ratio([rng.choice(pooled) for _ in pooled]) for _ in range(10000))
    print(f"{model} all: {len(pooled)} turns, pooled {ratio(pooled):.3f}x, 90% interval "
          f"{boots[500]:.2f}-{boots[9500]:.2f}x, mean of per-turn ratios "
          f"{sum(s / a for s, a in pooled) / len(pooled):.3f}x")
