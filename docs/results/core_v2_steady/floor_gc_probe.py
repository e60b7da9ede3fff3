# The floor comparison on vit_b16 (short) with Python's garbage collector on and off, one process each:
# one-off slow steps in the means come and go with the collector, in whichever step it lands.
# Run: KERAS_BACKEND=jax python docs/results/core_v2_steady/floor_gc_probe.py gc|nogc
import gc, json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, "benchmarks")
import bench_optimizer as b
if sys.argv[1] == "nogc":
    gc.disable()
for r in b.floor_comparison("vit_b16", b.parameter_shapes("vit_b16", True), 5, 40):
    print(sys.argv[1], r["variant"], "median", r["median_ms"], "mean", r["mean_ms"], "floor mean", r["floor_mean_ms"], "ratio med", r["ratio_vs_floor"], "mean", r["mean_ratio_vs_floor"])
