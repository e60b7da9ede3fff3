# Pools the JAX first-step turns of one program across the batch logs (SING at that program against
# AdamW of the same turn): per log, then all together, with the bootstrap 90% interval over turns of
# first_step_turns_summary.py. A/B logs name each SING run's code after its turn; only the program's
# is taken. Three programs: "before" is main up to d4da14f (the norm scaled by max|G|), "lanes" the
# three-lane norm on every tensor (c85b774, and the seventeenth pass's patch of the same program),
# "small_lanes" main from 8d8f7d0 (the lanes up to 4096 elements, scaled by max|G| above).
# Run from the repository root:
#   .venv/bin/python docs/results/first_step/pool_batches.py [before|lanes|small_lanes]
import collections, os, sys
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from first_step_turns_summary import bootstrap_interval, pooled, read_runs
# (log, SING code label of the program)
BEFORE = {
    "transformer": [("jax_turns_eighth.log", ""), ("jax_turns_ninth.log", ""), ("jax_skip_inside_tenth.log", "/tmp/base"),
                    ("jax_grouped_statistics_eleventh.log", "/work/main"), ("jax_turns_eleventh.log", "/work/main"),
                    ("jax_turns_twelfth.log", ""), ("jax_turns_thirteenth.log", ""),
                    ("jax_plain_norm_fourteenth.log", "/work/main"), ("jax_one_pass_norm_fourteenth.log", "/work/main"),
                    ("jax_no_library_calls_fifteenth.log", "/tmp/base"),
                    ("jax_plain_norm_finite_pass_fifteenth.log", "/tmp/base"),
                    ("jax_lane_norm_seventeenth.log", "/work/main"), ("jax_lanes_landed.log", "/tmp/base"),
                    ("jax_small_lanes.log", "/tmp/base")],
    "resnet50": [("jax_turns_eighth.log", ""), ("jax_resnet50_turns_twelfth.log", ""),
                 ("jax_turns_thirteenth.log", ""), ("jax_one_pass_norm_fourteenth.log", "/work/main"),
                 ("jax_no_library_calls_fifteenth.log", "/tmp/base"),
                 ("jax_plain_norm_finite_pass_fifteenth.log", "/tmp/base"),
                 ("jax_lane_norm_seventeenth.log", "/work/main"), ("jax_lanes_landed.log", "/tmp/base"),
                 ("jax_small_lanes.log", "/tmp/base")],
}
LANES = {
    model: [("jax_lane_norm_seventeenth.log", "/tmp/lanes_wt"), ("jax_lanes_landed.log", "/work/main")]
    for model in ("transformer", "resnet50")
}
SMALL_LANES = {model: [("jax_small_lanes.log", "/work/main"), ("jax_turns_small_lanes.log", "/work/main"),
                        ("jax_turns_nineteenth.log", "/tmp/head")]
               for model in ("transformer", "resnet50")}
LOGS = {"before": BEFORE, "lanes": LANES, "small_lanes": SMALL_LANES}[sys.argv[1] if len(sys.argv) > 1 else "before"]
import random


def two_level_interval(batches):
    """The pooled ratio's 90% interval with the logs resampled first, then
    the turns within each drawn log (10000 draws, seed 0): the logs come from
    different machines and commits, so the spread between them counts as
    well as the spread within each."""
    rng = random.Random(0)
    boots = []
    for _ in range(10000):
        num = den = 0.0
        for _ in batches:
            s, a = batches[rng.randrange(len(batches))]
            for _ in s:
                i = rng.randrange(len(s))
                num += s[i]["first"]
                den += a[i]["first"]
        boots.append(num / den)
    boots.sort()
    return boots[500], boots[9500]


for model, logs in LOGS.items():
    s_all, a_all, batches = [], [], []
    for name, code in logs:
        turns = collections.defaultdict(dict)
        for run in read_runs(os.path.join(HERE, name)):
            turn, _, run_code = run["label"].partition(" ")
            if run["model"] == model and (run["opt"] == "adamw" or (run["opt"] == "sing" and run_code == code)):
                turns[(run["batch"], turn)][run["opt"]] = run
        s, a = zip(*[(d["sing"], d["adamw"]) for d in turns.values() if len(d) == 2])
        print(f"{model} {name}: {len(s)} turns, pooled {pooled(s, a):.2f}x")
        s_all += s; a_all += a; batches.append((s, a))
    low, high = bootstrap_interval(s_all, a_all)
    low2, high2 = two_level_interval(batches)
    print(f"{model} all: {len(s_all)} turns, pooled {pooled(s_all, a_all):.3f}x, 90% interval "
          f"{low:.2f}-{high:.2f}x, mean of per-turn ratios "
          f"{sum(x['first'] / y['first'] for x, y in zip(s_all, a_all)) / len(s_all):.3f}x; "
          f"90% interval with logs resampled, then turns: {low2:.2f}-{high2:.2f}x")
