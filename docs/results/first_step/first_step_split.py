# One-off measurement for docs/performance.md (seventh pass): one first fit step
# (train_on_batch, jit_compile=True) in a fresh process, with wall and process CPU
# time and JAX's own compile events (trace, lowering, XLA compile).
#   CODE=<a keras_sing checkout> LABEL=x KERAS_BACKEND=jax python docs/results/first_step/first_step_split.py resnet50 sing
import os, sys, time, json, collections
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.environ.get("CODE", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "benchmarks"))
import jax
ev = collections.defaultdict(float)
jax.monitoring.register_event_duration_secs_listener(lambda name, d, **kw: ev.__setitem__(name, ev[name] + d))
import keras, numpy as np, first_step
model_name, opt_name = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
model = first_step.build_model(model_name)
model.compile(first_step.make_optimizer(opt_name), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
x = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype("float32"); y = np.zeros((8,), "int32")
ev.clear()
c0 = time.process_time(); t0 = time.perf_counter(); model.train_on_batch(x, y); keras.ops.convert_to_numpy(model.trainable_variables[0].value); first = time.perf_counter() - t0; cpu = time.process_time() - c0
keys = {k: round(v, 2) for k, v in ev.items() if v > 0.05}
print(json.dumps({"label": os.environ.get("LABEL", ""), "model": model_name, "opt": opt_name, "first": round(first, 2), "cpu": round(cpu, 2), **keys}))
