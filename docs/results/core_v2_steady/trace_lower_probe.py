# One-off measurement for docs/results/performance_history.md (eleventh pass): the optimizer step of the
# first_step.py transformer under jax.jit, traced and lowered twice in one process (seconds each), with the
# number of `call`s in the lowered HLO and what they call. CODE picks the keras_sing checkout.
#   CODE=<a keras_sing checkout> KERAS_BACKEND=jax python docs/results/core_v2_steady/trace_lower_probe.py
import os, sys, time, re
os.environ.setdefault("KERAS_BACKEND", "jax")
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path.insert(0, os.path.join(root, "benchmarks")); sys.path.insert(0, os.environ.get("CODE", root))
import warnings; warnings.filterwarnings("ignore")
import jax, keras, first_step, keras_sing
model = first_step.build_model("transformer")
tv = model.trainable_variables
opt = keras_sing.SING(keras.optimizers.AdamW(1e-3, weight_decay=1e-2))
opt.build(tv)
ov = [v.value for v in opt.variables]; tvals = [v.value for v in tv]
grads = [keras.ops.zeros(v.shape) for v in tv]
for i in range(2):
    f = jax.jit(lambda t, o, g: opt.stateless_apply(o, g, t), donate_argnums=(0, 1))
    t0 = time.perf_counter(); tr = f.trace(tvals, ov, grads); t1 = time.perf_counter(); lo = tr.lower(); t2 = time.perf_counter()
    hlo = lo.as_text(dialect="hlo")
    print(os.environ.get("CODE"), "trace", round(t1 - t0, 2), "lower", round(t2 - t1, 2), "calls", len(re.findall(r" call\(", hlo)), "lines", hlo.count("\n"))
import collections
print(collections.Counter(re.findall(r" call\([^)]*\), to_apply=%?([A-Za-z_]+)", hlo)).most_common(20))
