"""GradientNormMonitor and the gradient norms SING records."""

import itertools
import re
import warnings

import keras
import numpy as np
import pytest
import reference
from conftest import to_numpy

import keras_sing
from keras_sing.callbacks import GradientNormMonitor
from keras_sing.callbacks import exclude_regex
from keras_sing.callbacks import layer_of
from keras_sing.datasets import rde


def test_recorded_norms_match_oracle():
    k = keras.Variable(np.zeros((4, 3), "float32"), name="kernel")
    g = keras.Variable(np.ones((3,), "float32"), name="gamma")
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2), exclude="gamma")
    gk = np.random.standard_normal((4, 3)).astype("float32") * 7
    gg = np.random.standard_normal((3,)).astype("float32")
    opt.apply([gk, gg], [k, g])
    norms = opt.gradient_norms()
    centered = gk - gk.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(norms[k.path], np.linalg.norm(centered), rtol=1e-5)
    np.testing.assert_allclose(norms[g.path], np.linalg.norm(gg), rtol=1e-5)  # raw: excluded
    # the step divides by that norm: with SGD(1), the kernel moves by the
    # oracle's standardized gradient
    moved = keras.Variable(np.zeros((4, 3), "float32"), name="kernel")
    sgd = keras_sing.SING(keras.optimizers.SGD(1.0), lookahead=False)
    sgd.apply([gk], [moved])
    np.testing.assert_allclose(
        -to_numpy(moved), reference.standardize(gk, (0,)), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        sgd.gradient_norms()[moved.path], np.linalg.norm(centered), rtol=1e-5
    )


def vit_on_rde():
    """A tiny KerasHub ViT on RDE-like depth data: with SING at lr 1e-2 and
    no weight decay, its LayerNorm gradient norms grow while the loss falls
    (measured on all three backends)."""
    import keras_hub

    x, y = rde.generate(512, image_size=16, num_rectangles=4, seed=0)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=4, num_heads=4,
        hidden_dim=64, mlp_dim=128, use_class_token=False,
    )
    h = keras.layers.Dense(4 * 4 * 5)(backbone.output)
    h = keras.layers.Reshape((4, 4, 4, 4, 5))(h)
    h = keras.layers.Permute((1, 3, 2, 4, 5))(h)
    logits = keras.layers.Reshape((16, 16, 5))(h)
    model = keras.Model(backbone.input, logits)
    model.compile(
        keras_sing.SING(keras.optimizers.AdamW(1e-2, weight_decay=0.0)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, x, y


def test_monitor_detects_growing_norm_layer_gradients(tmp_path):
    model, x, y = vit_on_rde()
    csv_path = tmp_path / "norms.csv"
    monitor = GradientNormMonitor(every_n_batches=2, csv_path=str(csv_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=32, epochs=8, verbose=0, callbacks=[monitor])
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    # per-layer norms are in the History and in the CSV
    keys = [k for k in history.history if k.startswith("grad_norm/")]
    assert any(k.endswith("/ln_1") for k in keys) and any(k.endswith("decoder") or "dense" in k for k in keys)
    assert all(len(history.history[k]) == 8 for k in keys)
    rows = csv_path.read_text().strip().splitlines()
    assert len(rows) == 1 + 8 and rows[0].startswith("epoch,")
    # the pattern: loss falls while a LayerNorm's gradient norm grows
    assert monitor.alerts, "expected the growing-LayerNorm pattern"
    alert = monitor.alerts[0]
    assert "/ln" in alert["layer"]
    assert all(b > a for a, b in itertools.pairwise(alert["norms"]))
    assert alert["norms"][-1] >= 1.5 * alert["norms"][0]
    assert alert["losses"][-1] < alert["losses"][0]
    messages = [str(w.message) for w in caught if "keras_sing" in str(w.message)]
    assert messages and "exclude=" in messages[0] and "trainable = False" in messages[0]
    # the printed regex selects exactly the alerted layer's variables
    rule = re.search(r"exclude=r'(.*)'\)\.$", messages[0]).group(1)
    paths = [v.path for v in model.trainable_variables]
    selected = [p for p in paths if re.search(rule, p)]
    assert selected and all(layer_of(p) == alert["layer"] for p in selected)
    assert selected == [p for p in paths if layer_of(p) == alert["layer"]]


def test_alert_names_a_watched_layer_by_what_it_is():
    """Only the default watch list is made of normalization layers; a
    layer picked by `watch=` is called a layer."""
    series, losses = [1.0, 2.0], [0.9, 0.5]
    default = GradientNormMonitor(warn=False)
    default._alert(3, "model/ln_1", losses, series)
    picked = GradientNormMonitor(watch="dense", warn=False)
    picked._alert(3, "model/dense", losses, series)
    assert "of normalization layer 'model/ln_1'" in default.alerts[0]["message"]
    assert "of layer 'model/dense'" in picked.alerts[0]["message"]


def test_monitor_stays_quiet_without_normalization_layers():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(keras_sing.SING(keras.optimizers.AdamW(1e-2)), "mse")
    x = np.random.standard_normal((128, 8)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    monitor = GradientNormMonitor(every_n_batches=1)
    model.fit(x, y, batch_size=16, epochs=6, verbose=0, callbacks=[monitor])
    assert monitor.alerts == []
    assert len(monitor.epoch_norms) == 6 and all(np.isfinite(list(n.values())).all() for n in monitor.epoch_norms)


def test_monitor_history_follows_the_run(tmp_path):
    """A `fit` from epoch 0 starts a new history, as it starts the CSV file
    anew; a resumed one (`initial_epoch > 0`) goes on with both."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="m")
    model.compile(keras_sing.SING(keras.optimizers.AdamW(1e-2)), "mse")
    x, y = np.random.standard_normal((16, 4)).astype("float32"), np.ones((16, 3), "float32")
    csv_path = tmp_path / "norms.csv"
    monitor = GradientNormMonitor(every_n_batches=1, csv_path=str(csv_path))

    def fit(**kwargs):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[monitor], **kwargs)
        rows = csv_path.read_text().splitlines()
        return len(monitor.epoch_norms), len(monitor.epoch_losses), [r.split(",")[0] for r in rows[1:]]

    assert fit(epochs=2) == (2, 2, ["0", "1"])
    assert fit(epochs=3) == (3, 3, ["0", "1", "2"])  # a new run
    assert fit(epochs=5, initial_epoch=3) == (5, 5, ["0", "1", "2", "3", "4"])  # resumed


def test_a_new_monitor_on_a_resumed_fit_appends_to_the_csv(tmp_path):
    """A resumed process creates a new callback: its rows go after the
    file's, in the file's columns, as `CSVLogger(append=True)` keeps them."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="m")
    model.compile(keras_sing.SING(keras.optimizers.AdamW(1e-2)), "mse")
    x, y = np.random.standard_normal((16, 4)).astype("float32"), np.ones((16, 3), "float32")
    csv_path = tmp_path / "norms.csv"

    def fit(**kwargs):
        monitor = GradientNormMonitor(every_n_batches=1, csv_path=str(csv_path))
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[monitor], **kwargs)
        return [r.split(",") for r in csv_path.read_text().splitlines()]

    first = fit(epochs=2)
    assert [r[0] for r in first] == ["epoch", "0", "1"] and first[0] == ["epoch", "m/d"]
    rows = fit(epochs=4, initial_epoch=2)
    assert rows[:3] == first and [r[0] for r in rows] == ["epoch", "0", "1", "2", "3"]
    assert all(float(r[1]) > 0 for r in rows[1:])
    assert [r[0] for r in fit(epochs=1)] == ["epoch", "0"]  # a new run starts it afresh
    csv_path.unlink()
    assert [r[0] for r in fit(epochs=3, initial_epoch=2)] == ["epoch", "2"]  # no file yet


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="Keras's torch trainer refuses steps_per_execution > 1")
@pytest.mark.parametrize("steps_per_execution, every_n_batches, samples", [(1, 4, 4), (2, 4, 4), (2, 2, 8), (3, 3, 6), (4, 1, 4)])
def test_the_monitor_samples_every_n_batches_whatever_the_steps_per_execution(
    steps_per_execution, every_n_batches, samples
):
    """Keras reports only the last batch of each execution (s - 1, 2s - 1,
    ...): the monitor samples each execution that reaches a multiple of n
    (16 batches: batches 0, n, 2n, ... when s divides n)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    model.compile(keras_sing.SING(keras.optimizers.AdamW(1e-2)), "mse", steps_per_execution=steps_per_execution)
    counts = []

    class Counting(GradientNormMonitor):
        def on_epoch_end(self, epoch, logs=None):
            counts.append(self._samples)
            super().on_epoch_end(epoch, logs)

    x = np.random.standard_normal((64, 4)).astype("float32")
    model.fit(x, np.ones((64, 3), "float32"), batch_size=4, epochs=1, verbose=0,
              callbacks=[Counting(every_n_batches=every_n_batches)])
    assert counts == [samples]


def test_monitor_reads_every_sing_of_a_multi_optimizer():
    """A `MultiOptimizer` with SING on some layers: the monitor logs the
    norms SING records, for those layers only."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, name="body"), keras.layers.LayerNormalization(name="ln"),
         keras.layers.Dense(3, name="head")], name="m",
    )
    sing = keras_sing.SING(keras.optimizers.AdamW(1e-2))
    model.compile(keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(sing, {"m/head/.*": keras.optimizers.AdamW(1e-2)})
    ), "mse")
    x = np.random.standard_normal((16, 4)).astype("float32")
    history = model.fit(x, np.ones((16, 3), "float32"), batch_size=8, epochs=1, verbose=0,
                        callbacks=[GradientNormMonitor(every_n_batches=1)])
    assert sorted(k for k in history.history if k.startswith("grad_norm/")) == ["grad_norm/m/body", "grad_norm/m/ln"]
    assert history.history["grad_norm/m/body"][0] > 0


def test_monitor_needs_sing():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("adamw", "mse")
    with pytest.raises(ValueError, match="keras_sing.SING"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0, callbacks=[GradientNormMonitor()])


def test_monitor_csv_folder_is_checked_when_training_starts(tmp_path):
    """As Keras's CSVLogger: before the first batch, not at the first
    epoch's end."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras_sing.SING(keras.optimizers.SGD(0.1)), "mse")
    before = [to_numpy(w) for w in model.weights]
    monitor = GradientNormMonitor(csv_path=str(tmp_path / "missing" / "norms.csv"))
    with pytest.raises(FileNotFoundError, match="does not exist. Create it first"):
        model.fit(np.ones((4, 2)), np.ones((4, 1)), batch_size=1, verbose=0, callbacks=[monitor])
    for a, b in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(a, to_numpy(b))  # no batch was trained


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(min_growth=1.0), ValueError, "min_growth"),
        (dict(min_growth=float("nan")), ValueError, "min_growth a finite number"),
        (dict(every_n_batches="10"), ValueError, "every_n_batches='10'"),
        (dict(every_n_batches=2.5), ValueError, "ints >= 1"),
        (dict(window=0), ValueError, "window=0"),
        (dict(watch="["), ValueError, "watch.*invalid regex.*re.escape"),
        (dict(watch=3), TypeError, "watch"),
        (dict(csv_path=3), TypeError, "csv_path=3"),
    ],
)
def test_monitor_arguments_are_checked_when_created(kwargs, error, match):
    """Not epochs into `fit`, where a bad `watch` regex used to fail only at
    the first alert check."""
    with pytest.raises(error, match=match):
        GradientNormMonitor(**kwargs)
    GradientNormMonitor(every_n_batches=np.int64(3), window=2, min_growth=np.float32(2.0), watch=r"ln_\d")


def test_norms_visible_during_fit_on_every_backend():
    """The values read mid-epoch are the live ones (JAX keeps state apart)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2))
    model.compile(opt, "mse")
    seen = []

    class Spy(GradientNormMonitor):
        def _sample(self):
            super()._sample()
            pairs = opt.gradient_norm_variables
            seen.append(self._current_values([v for _, v in pairs]))

    x = np.random.standard_normal((8, 4)).astype("float32")
    model.fit(x, np.ones((8, 3), "float32"), batch_size=4, epochs=1, verbose=0, callbacks=[Spy(every_n_batches=1)])
    assert len(seen) == 2
    assert all(float(v) > 0 for v in seen[0])
    final = [float(to_numpy(v)) for _, v in opt.gradient_norm_variables]
    np.testing.assert_allclose([float(v) for v in seen[-1]], final, rtol=1e-6)


def test_exclude_regex_selects_one_layer():
    paths = [
        "vit_encoder/transformer_block_1/ln_1/gamma",
        "vit_encoder/transformer_block_1/ln_1/beta",
        "vit_encoder/transformer_block_11/ln_1/gamma",
        "vit_encoder/transformer_block_1/ln_10/gamma",
        "vit_encoder/transformer_block_1/ln_1/sub/gamma",
        "other_vit_encoder/transformer_block_1/ln_1/gamma",
    ]
    rule = exclude_regex("vit_encoder/transformer_block_1/ln_1")
    assert [p for p in paths if re.search(rule, p)] == paths[:2]
    # SING takes it as an `exclude` rule: the excluded layer's kernel records
    # its raw gradient norm, the other layer's its centralized one
    excluded, kept = keras.layers.Dense(3, name="dense"), keras.layers.Dense(3, name="dense_1")
    excluded.build((4,))
    kept.build((4,))
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2), exclude=exclude_regex(layer_of(excluded.kernel.path)))
    g = np.random.default_rng(0).standard_normal((4, 3)).astype("float32") + 5.0
    opt.apply([g, g], [excluded.kernel, kept.kernel])
    norms = opt.gradient_norms()
    np.testing.assert_allclose(norms[excluded.kernel.path], np.linalg.norm(g), rtol=1e-5)
    np.testing.assert_allclose(norms[kept.kernel.path], np.linalg.norm(g - g.mean(0)), rtol=1e-5)
