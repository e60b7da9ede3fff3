"""The examples' recorded runs, with loss spikes counted again on each
batch's own loss (recovered from the running epoch means that metrics.json
holds, as `examples/_common.BatchLoss` now records them) with the study's
spike definition (`examples/_common.spike_count`). The runs were recorded
before that fix, when spikes were counted on the running means.

Run from the repository root: python docs/results/examples_spikes_recomputed.py
"""
import json
import os
import sys

sys.argv = sys.argv[:1]
sys.path.insert(0, "examples")
os.environ.setdefault("KERAS_BACKEND", "jax")
import _common  # noqa: E402

# run folder -> training samples per epoch (from the examples' data sizes)
RUNS = {
    "vit_depth_rde_demo": 2000, "vit_depth_rde_adamw_lr1e-2": 2000, "resnet_digits": 1437,
    "bert_minilm_wordorder": 2000, "bert_random_wordorder": 4000, "bert_random_wordorder_adamw_lr1e-3": 4000,
}
for name, num_samples in RUNS.items():
    payload = json.load(open(f"docs/results/{name}/metrics.json"))
    batch_size = payload["config"]["batch_size"]
    per_epoch = -(-num_samples // batch_size)
    for r in payload["results"]:
        means = r["batch_loss"]
        assert len(means) == per_epoch * r["epochs"], (name, len(means), per_epoch)
        own = []
        for e in range(r["epochs"]):
            seen, total = 0, 0.0
            for m in means[e * per_epoch:(e + 1) * per_epoch]:
                size = min(batch_size, num_samples - seen)
                seen += size
                own.append((m * seen - total) / size)
                total = m * seen
        print(f"{name} {r['optimizer']} lr {r['learning_rate']:g}: spikes on running means (recorded) "
              f"{r['loss_spikes']}, on per-batch losses {_common.spike_count(own)}; "
              f"per-batch loss max {max(own):.3f}, last {own[-1]:.3f}")
        if _common.spike_count(own):
            import numpy as np

            v = np.asarray(own)
            for t in range(20, len(v)):
                base = float(np.median(v[t - 20:t]))
                if v[t] > 2.0 * base and v[t] - base > 0.02 * float(np.median(v[:20])):
                    print(f"    batch {t} (epoch {t // per_epoch + 1}): loss {v[t]:.4f} against the median of the 20 before, {base:.4f}")
