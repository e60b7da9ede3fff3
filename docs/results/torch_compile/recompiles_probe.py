# torch.compile (fit with jit_compile=True on torch): the first epoch's time and dynamo's
# counters, for a 2-layer Dense model, 16 steps of batch 4, with SING(AdamW) or AdamW.
# Run from the repository root, one process per run (dynamo's counters are per process):
#   KERAS_BACKEND=torch .venv/bin/python docs/results/torch_compile/recompiles_probe.py sing
#   KERAS_BACKEND=torch .venv/bin/python docs/results/torch_compile/recompiles_probe.py adamw
# An older checkout's keras_sing is measured with PYTHONPATH=<its root>.
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import keras  # noqa: E402
import numpy as np  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

import keras_sing  # noqa: E402

x = np.random.rand(64, 4).astype("float32")
y = np.random.rand(64, 2).astype("float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
host = keras.optimizers.AdamW(1e-2)
model.compile(optimizer=keras_sing.SING(host) if sys.argv[1] == "sing" else host, loss="mse", jit_compile=True)
start = time.perf_counter()
model.fit(x, y, epochs=1, batch_size=4, verbose=0)
first = time.perf_counter() - start
print(f"{sys.argv[1]}: first epoch (16 steps, compile included) {first:.1f} s; "
      f"unique graphs {counters['stats']['unique_graphs']}; frames {dict(counters['frames'])}")
