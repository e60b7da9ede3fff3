# One-off measurement for docs/results/performance_history.md (ninth pass): XLA
# compile time of the optimizer step alone, jax.jit(opt.stateless_apply) on the
# first_step.py transformer's 200 variables, traced, lowered and compiled afresh N
# times in one process (wall and process CPU per compile, and the compiled
# program's fusion count). SING's options come from KW (a dict literal); the
# probes of compile_probes_ninth.patch are switched on by PADRED=1, BITS=1, SYNCOUT=1.
#   KW="{'lookahead': False}" KERAS_BACKEND=jax python docs/results/core_v2_steady/compile_probe_ninth.py transformer sing 2
import os, sys, time, re
os.environ.setdefault("KERAS_BACKEND", "jax")
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "benchmarks"))
sys.path.insert(0, os.environ.get("CODE", os.path.join(here, "..", "..", "..")))
import warnings; warnings.filterwarnings("ignore")
import jax, keras, first_step, keras_sing
model = first_step.build_model(sys.argv[1])
tv = model.trainable_variables
name = sys.argv[2]; n = int(sys.argv[3])
host = keras.optimizers.AdamW(1e-3, weight_decay=1e-2)
opt = host if name == "adamw" else keras_sing.SING(host, **eval(os.environ.get("KW", "{}")))
opt.build(tv)
ov = [v.value for v in opt.variables]; tvals = [v.value for v in tv]
grads = [keras.ops.zeros(v.shape) for v in tv]
walls, cpus = [], []
for i in range(n):
    f = jax.jit(lambda t, o, g: opt.stateless_apply(o, g, t), donate_argnums=(0, 1))
    lo = f.trace(tvals, ov, grads).lower()
    c0 = time.process_time(); t0 = time.perf_counter(); co = lo.compile()
    walls.append(time.perf_counter() - t0); cpus.append(time.process_time() - c0)
txt = co.as_text()
print(os.environ.get("LABEL", ""), name, sys.argv[1], "wall", [round(x, 2) for x in walls], "cpu", [round(x, 2) for x in cpus],
      "min", round(min(walls), 2), round(min(cpus), 2), "fusions", len(re.findall(r" fusion\(", txt)))
