# One-off measurement for docs/results/performance_history.md (eleventh pass): the time Python's garbage
# collector takes during one first fit step (train_on_batch, jit_compile=True), in a fresh process.
#   CODE=<a keras_sing checkout> KERAS_BACKEND=jax python docs/results/first_step/gc_first_step.py transformer sing
import os, sys, time, json, gc
os.environ.setdefault("KERAS_BACKEND", "jax")
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path.insert(0, os.environ.get("CODE", root)); sys.path.insert(0, os.path.join(root, "benchmarks"))
import warnings; warnings.filterwarnings("ignore")
gcstat = {"t": 0.0, "n": [0, 0, 0], "start": None}
def cb(phase, info):
    if phase == "start": gcstat["start"] = time.perf_counter()
    else:
        gcstat["t"] += time.perf_counter() - gcstat["start"]; gcstat["n"][info["generation"]] += 1
gc.callbacks.append(cb)
import jax, keras, numpy as np, first_step
model_name, opt_name = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
model = first_step.build_model(model_name)
model.compile(first_step.make_optimizer(opt_name), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
x = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype("float32"); y = np.zeros((8,), "int32")
gcstat["t"] = 0.0; gcstat["n"] = [0, 0, 0]
if os.environ.get("GCOFF"): gc.disable()
t0 = time.perf_counter(); model.train_on_batch(x, y); keras.ops.convert_to_numpy(model.trainable_variables[0].value); first = time.perf_counter() - t0
print(json.dumps({"opt": opt_name, "gcoff": os.environ.get("GCOFF", ""), "first": round(first, 2), "gc_s": round(gcstat["t"], 2), "gc_n": gcstat["n"], "objects": len(gc.get_objects())}))
