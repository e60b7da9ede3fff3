# One-off measurement for docs/results/performance_history.md (eleventh pass): the optimizer step of the
# first_step.py transformer under jax.jit, traced and lowered twice in one process (seconds each), with the
# number of `call`s in the lowered HLO and what they call. CODE picks the keras_sing checkout.
#   CODE=<a keras_sing checkout> KERAS_BACKEND=jax python docs/results/core_v2_steady/trace_lower_probe.py
import os, sys, time, re
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe_setup
new_jit, args = probe_setup.optimizer_step("transformer", "sing", {})
for i in range(2):
    f = new_jit()
    t0 = time.perf_counter(); tr = f.trace(*args); t1 = time.perf_counter(); lo = tr.lower(); t2 = time.perf_counter()
    hlo = lo.as_text(dialect="hlo")
    print(os.environ.get("CODE"), "trace", round(t1 - t0, 2), "lower", round(t2 - t1, 2), "calls", len(re.findall(r" call\(", hlo)), "lines", hlo.count("\n"))
import collections
print(collections.Counter(re.findall(r" call\([^)]*\), to_apply=%?([A-Za-z_]+)", hlo)).most_common(20))
