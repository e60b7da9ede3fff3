# One-off measurement for docs/results/performance_history.md (ninth pass): XLA
# compile time of the optimizer step alone, jax.jit(opt.stateless_apply) on the
# first_step.py transformer's 200 variables, traced, lowered and compiled afresh N
# times in one process (wall and process CPU per compile, and the compiled
# program's fusion count). SING's options come from KW (a dict literal); the
# probes of compile_probes_ninth.patch are switched on by PADRED=1, BITS=1, SYNCOUT=1.
#   KW="{'lookahead': False}" KERAS_BACKEND=jax python docs/results/core_v2_steady/compile_probe_ninth.py transformer sing 2
import os, sys, time, re
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe_setup
name = sys.argv[2]; n = int(sys.argv[3])
new_jit, args = probe_setup.optimizer_step(sys.argv[1], name, eval(os.environ.get("KW", "{}")))
walls, cpus = [], []
for i in range(n):
    lo = new_jit().trace(*args).lower()
    c0 = time.process_time(); t0 = time.perf_counter(); co = lo.compile()
    walls.append(time.perf_counter() - t0); cpus.append(time.process_time() - c0)
txt = co.as_text()
print(os.environ.get("LABEL", ""), name, sys.argv[1], "wall", [round(x, 2) for x in walls], "cpu", [round(x, 2) for x in cpus],
      "min", round(min(walls), 2), round(min(cpus), 2), "fusions", len(re.findall(r" fusion\(", txt)))
