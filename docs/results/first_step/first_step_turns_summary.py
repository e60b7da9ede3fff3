# Summarizes first_step_turns.sh output: per-turn SING/AdamW first-step ratios, the pooled
# ratio with a bootstrap interval over turns, and the process-CPU and XLA-compile ratios.
#   python docs/results/first_step/first_step_turns_summary.py turns.jsonl
import json, statistics, random, sys
rows=[json.loads(l) for l in open(sys.argv[1])]
for m in ("transformer","resnet50"):
    s=[r for r in rows if r["model"]==m and r["opt"]=="sing"]; a=[r for r in rows if r["model"]==m and r["opt"]=="adamw"]
    n=min(len(s),len(a)); s,a=s[:n],a[:n]
    if not n: continue
    per=[x["first"]/y["first"] for x,y in zip(s,a)]
    pooled=sum(x["first"] for x in s)/sum(y["first"] for y in a)
    rng=random.Random(0); boots=[]
    for _ in range(10000):
        idx=[rng.randrange(n) for _ in range(n)]
        boots.append(sum(s[i]["first"] for i in idx)/sum(a[i]["first"] for i in idx))
    boots.sort()
    print(f"{m}: {n} turns; per turn {[round(x,2) for x in per]}; pooled {pooled:.2f}x "
          f"(bootstrap 90% interval {boots[500]:.2f}-{boots[9500]:.2f}x); median of turns {statistics.median(per):.2f}x; "
          f"process CPU pooled {sum(x['cpu'] for x in s)/sum(y['cpu'] for y in a):.2f}x; XLA compile pooled "
          f"{sum(x['/jax/core/compile/backend_compile_duration'] for x in s)/sum(y['/jax/core/compile/backend_compile_duration'] for y in a):.2f}x; "
          f"AdamW first step {min(y['first'] for y in a):.1f}-{max(y['first'] for y in a):.1f} s")
