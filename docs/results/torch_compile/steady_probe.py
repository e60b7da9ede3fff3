# torch: the first step (a fit on one batch), the next epoch (compiles included under jit_compile=True), then the steady step, for SING(AdamW) or AdamW.
# usage (repository root): KERAS_BACKEND=torch .venv/bin/python docs/results/torch_compile/steady_probe.py {sing,adamw} {small,mlp} [jit|eager]
# small: Dense(3)-Dense(2), 64 samples, batch 4; mlp: 4 x Dense(512, relu) + Dense(10) on 256 features (0.92M parameters), batch 16.
# An older checkout is measured with PYTHONPATH=<its root>; dynamo counters are per process.
import sys
import time
import warnings
warnings.filterwarnings("ignore")
import keras, numpy as np
from torch._dynamo.utils import counters
import keras_sing
kind, size = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
if size == "small":
    x = rng.random((64, 4), dtype="float32"); y = rng.random((64, 2), dtype="float32")
    layers = [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)]
    batch = 4
else:
    x = rng.random((256, 256), dtype="float32"); y = rng.random((256, 10), dtype="float32")
    layers = [keras.Input((256,))] + [keras.layers.Dense(512, activation="relu") for _ in range(4)] + [keras.layers.Dense(10)]
    batch = 16
model = keras.Sequential(layers)
host = keras.optimizers.AdamW(1e-3)
model.compile(optimizer=keras_sing.SING(host) if kind == "sing" else host, loss="mse", jit_compile=(sys.argv[3] == "jit") if len(sys.argv) > 3 else True)
t0 = time.perf_counter(); model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0); step1 = time.perf_counter() - t0
t0 = time.perf_counter(); model.fit(x, y, epochs=1, batch_size=batch, verbose=0); first = time.perf_counter() - t0
t0 = time.perf_counter(); model.fit(x, y, epochs=2, batch_size=batch, verbose=0); steady = (time.perf_counter() - t0) / (2 * len(x) // batch) * 1e3
print(f"{kind} {size}: first step {step1:.1f} s; next epoch ({len(x)//batch} steps) {first:.1f} s; then {steady:.2f} ms/step; unique graphs {counters['stats']['unique_graphs']}; frames {dict(counters['frames'])}", flush=True)
