# One-off measurement for docs/results/performance_history.md (eleventh pass): where XLA:CPU spends the
# compile of the optimizer step alone (jax.jit(opt.stateless_apply) on the first_step.py transformer's 200
# variables), read from a jax.profiler trace of the compile: XLA's own TraceMe events (its pass pipelines,
# each HLO pass, the fusion compiler and the LLVM JIT), summed by name. SING's options come from KW. Needs
# TensorFlow's copy of the XPlane protobuf to read the trace (the test environment has it).
#   KW="{'lookahead': False}" KERAS_BACKEND=jax python docs/results/core_v2_steady/compile_pass_profile.py sing
import os, sys, time, glob, collections
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe_setup
import jax
new_jit, args = probe_setup.optimizer_step("transformer", sys.argv[1], eval(os.environ.get("KW", "{}")))
lo = new_jit().trace(*args).lower()
import tempfile; d = tempfile.mkdtemp()
with jax.profiler.trace(d):
    t0 = time.perf_counter(); co = lo.compile(); total = time.perf_counter() - t0
from tensorflow.tsl.profiler.protobuf import xplane_pb2
xs = xplane_pb2.XSpace()
xs.ParseFromString(open(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0], "rb").read())
agg = collections.Counter(); cnt = collections.Counter()
for plane in xs.planes:
    md = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
        for ev in line.events:
            name = md.get(ev.metadata_id, "?")
            agg[name] += ev.duration_ps / 1e12; cnt[name] += 1
print(sys.argv[1], os.environ.get("KW", ""), "compile", round(total, 2))
for name, t in agg.most_common(int(os.environ.get("TOP", 60))):
    print(f"{t:8.3f} s {cnt[name]:6d}  {name[:110]}")
