# Summarizes first_step_turns.sh and first_step_ab.sh output: per-turn SING/AdamW first-step
# ratios, the pooled ratio with a bootstrap interval over turns, and the process-CPU and
# XLA-compile ratios. Each SING configuration (optimizer, and the code path that
# first_step_ab.sh puts after the turn in the label) is paired with AdamW's run of the same
# turn; lines that are not JSON (a log's headers) are skipped, and a header after runs starts
# a new batch, whose turns are counted apart. pool_batches.py reuses read_runs, pooled and
# bootstrap_interval.
#   python docs/results/first_step/first_step_turns_summary.py turns.jsonl
import collections, json, statistics, random, sys
COMPILE="/jax/core/compile/backend_compile_duration"

def read_runs(path):
    """The log's runs, each with "batch": the number of the batch it belongs to."""
    rows, batch, after_runs = [], 0, False
    for line in open(path):
        if line.startswith("{"):
            rows.append({**json.loads(line), "batch": batch}); after_runs = True
        elif after_runs:
            batch, after_runs = batch + 1, False
    return rows

def pooled(s, a, key="first"):
    """sum over turns of SING's `key` / sum of AdamW's (s[i] and a[i]: one turn's runs)."""
    return sum(x[key] for x in s)/sum(y[key] for y in a)

def bootstrap_interval(s, a):
    """The pooled first-step ratio's 90% interval, turns resampled 10000 times (seed 0)."""
    n=len(s); rng=random.Random(0); boots=[]
    for _ in range(10000):
        idx=[rng.randrange(n) for _ in range(n)]
        boots.append(sum(s[i]["first"] for i in idx)/sum(a[i]["first"] for i in idx))
    boots.sort()
    return boots[500], boots[9500]

def main(path):
    rows=read_runs(path)
    for m in ("transformer","resnet50"):
        turns=collections.defaultdict(dict)
        for r in rows:
            if r["model"]!=m: continue
            turn,_,code=r["label"].partition(" ")
            turns[(r["batch"], turn)][r["opt"] if r["opt"]=="adamw" else f"{r['opt']} {code}".strip()]=r
        configs=sorted({k for d in turns.values() for k in d if k!="adamw"})
        for c in configs:
            pairs=[(d[c],d["adamw"]) for d in turns.values() if c in d and "adamw" in d]
            n=len(pairs)
            if not n: continue
            s,a=zip(*pairs)
            per=[x["first"]/y["first"] for x,y in pairs]
            low,high=bootstrap_interval(s,a)
            print(f"{m} {c}: {n} turns; per turn {[round(x,2) for x in per]}; pooled {pooled(s,a):.2f}x "
                  f"(bootstrap 90% interval {low:.2f}-{high:.2f}x); median of turns {statistics.median(per):.2f}x; "
                  f"process CPU pooled {pooled(s,a,'cpu'):.2f}x; XLA compile pooled "
                  f"{pooled(s,a,COMPILE):.2f}x; "
                  f"first step: SING mean {statistics.mean(x['first'] for x in s):.1f} s, "
                  f"AdamW {min(y['first'] for y in a):.1f}-{max(y['first'] for y in a):.1f} s (mean {statistics.mean(y['first'] for y in a):.1f})")

if __name__ == "__main__":
    main(sys.argv[1])
