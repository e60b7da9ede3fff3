"""SING inside Keras: fit, custom loops, callbacks, save/load/resume, mixed
precision, on a small conv + dense + embedding + attention model."""

import os

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import to_numpy

import keras_sing

BATCH = 8


def small_model(seed=1, attention=True):
    keras.utils.set_random_seed(seed)
    image = keras.Input((8, 8, 3), name="image")
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    t = keras.layers.Embedding(12, 8, name="emb")(tokens)
    if attention:
        t = keras.layers.MultiHeadAttention(2, 4, name="mha")(t, t)
    t = keras.layers.LayerNormalization(name="layer_norm")(t)
    t = keras.layers.GlobalAveragePooling1D()(t)
    h = keras.layers.Concatenate()([x, t])
    h = keras.layers.Dense(16, activation="relu", name="dense")(h)
    out = keras.layers.Dense(3, name="logits")(h)
    return keras.Model({"image": image, "tokens": tokens}, out)


def dataset(n=64, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 12, size=(n, 6)).astype("int32")
    image = rng.standard_normal((n, 8, 8, 3)).astype("float32")
    y = (tokens[:, 0] % 3).astype("int32")
    return {"image": image, "tokens": tokens}, y


def compile_(model, optimizer, jit_compile="auto"):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )


def weights(model):
    return [to_numpy(w) for w in model.weights]


def jit_params():
    # torch.compile costs ~30-75 s per model on a CI core: compiled once on
    # torch (test_golden compiles there too), XLA on TF/JAX.
    return ["auto", True]


@pytest.mark.parametrize("jit_compile", jit_params())
def test_fit_learns_on_every_backend(jit_compile):
    model = small_model()
    compile_(model, keras_sing.SING(keras.optimizers.AdamW(1e-2)), jit_compile)
    x, y = dataset()
    before = weights(model)
    history = model.fit(x, y, batch_size=BATCH, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    after = weights(model)
    assert all(np.all(np.isfinite(w)) for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
    evaluated = model.evaluate(x, y, verbose=0)
    assert np.isfinite(evaluated)


def test_fit_with_fan_in_axes_and_exclude():
    model = small_model()
    opt = keras_sing.SING(
        keras.optimizers.AdamW(1e-2, weight_decay=1e-3),
        centralize_axes=keras_sing.fan_in_axes(model),
        exclude=r"layer_norm",
    )
    compile_(model, opt)
    x, y = dataset()
    history = model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_callbacks_drive_the_hosts_learning_rate():
    model = small_model()
    host = keras.optimizers.AdamW(1e-2)
    compile_(model, keras_sing.SING(host))
    x, y = dataset(32)
    model.fit(
        x, y, batch_size=BATCH, epochs=3, verbose=0,
        callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 / (epoch + 1))],
    )
    np.testing.assert_allclose(float(to_numpy(host.learning_rate)), 0.01 / 3, rtol=1e-6)
    model.fit(
        x, y, batch_size=BATCH, epochs=2, verbose=0,
        callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)],
    )
    # patience=0: the first epoch sets the best loss, the second reduces.
    np.testing.assert_allclose(float(to_numpy(host.learning_rate)), 0.01 / 6, rtol=1e-5)


def _compiled_apply(optimizer, variables):
    """`grads -> None`: one step of `optimizer` on `variables` as training
    compiles it: `jax.jit(stateless_apply)` with the values written back
    on JAX, an XLA `tf.function` on TF, eager on torch."""
    optimizer.build(variables)
    if BACKEND == "jax":
        import jax

        step = jax.jit(optimizer.stateless_apply)

        def apply(grads):
            new, state = step([v.value for v in optimizer.variables], grads, [v.value for v in variables])
            for v, value in zip(list(variables) + list(optimizer.variables), list(new) + list(state), strict=True):
                v.assign(value)

        return apply
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda grads: optimizer.apply(grads, variables), jit_compile=True)
    return lambda grads: optimizer.apply(grads, variables)


def test_inside_keras_multi_optimizer():
    """SING as one of a `keras.optimizers.MultiOptimizer`'s optimizers,
    compiled (on JAX the MultiOptimizer calls SING's `apply` inside its own
    `stateless_apply`): the same steps as SING and AdamW applied apart,
    eagerly. A NaN in SING's gradients skips SING's step only; the other
    optimizer applies its own, as Keras's MultiOptimizer does."""
    rng = np.random.default_rng(0)
    steps = [[rng.standard_normal((4, 3)).astype("float32"), rng.standard_normal((3, 2)).astype("float32")] for _ in range(4)]
    steps[1][0][0, 0] = np.nan

    def variables():
        return [keras.Variable(np.ones((4, 3), "float32"), name="body"), keras.Variable(np.ones((3, 2), "float32"), name="head")]

    def sing():
        return keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2, centralize_axes={"body": (0,)})

    body, head = variables()
    multi = keras.optimizers.MultiOptimizer(lambda v: multi_sing if v.name == "body" else multi_adamw)
    multi_sing, multi_adamw = sing(), keras.optimizers.AdamW(1e-2)
    apply = _compiled_apply(multi, [body, head])
    for grads in steps:
        apply([keras.ops.convert_to_tensor(g) for g in grads])

    body_alone, head_alone = variables()
    alone_sing, alone_adamw = sing(), keras.optimizers.AdamW(1e-2)
    for g_body, g_head in steps:
        alone_sing.apply([keras.ops.convert_to_tensor(g_body)], [body_alone])
        alone_adamw.apply([keras.ops.convert_to_tensor(g_head)], [head_alone])

    assert int(to_numpy(multi_sing.skipped_steps)) == int(to_numpy(alone_sing.skipped_steps)) == 1
    np.testing.assert_allclose(to_numpy(body), to_numpy(body_alone), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(head), to_numpy(head_alone), rtol=1e-6)
    assert not np.allclose(to_numpy(body), 1.0)


def test_swap_ema_weights_also_inside_a_loss_scale_optimizer():
    """`keras.callbacks.SwapEMAWeights` with an EMA host: evaluation on the
    EMA weights, which the model keeps at the end. Inside a
    LossScaleOptimizer (what `mixed_float16` compiles to) the callback
    finds SING as the inner optimizer; it reads the host's EMA copies
    through it. Oracle: the same run without the LossScaleOptimizer (the
    loss scale is a power of two: exact in float32). No attention: its key
    bias has no effect on the loss, so its gradient is rounding noise, which
    differs between the two compiled programs."""
    x, y = dataset(32)

    class RawWeights(keras.callbacks.Callback):
        """Ahead of SwapEMAWeights: the trained (not averaged) weights at
        the last epoch's end."""

        def on_epoch_end(self, epoch, logs=None):
            self.values = weights(self.model)

    def run(wrap):
        model = small_model(attention=False)
        optimizer = keras_sing.SING(keras.optimizers.AdamW(1e-2, use_ema=True, ema_momentum=0.9))
        compile_(model, wrap(optimizer))
        raw = RawWeights()
        history = model.fit(
            x, y, batch_size=BATCH, epochs=2, verbose=0, validation_data=(x, y),
            callbacks=[raw, keras.callbacks.SwapEMAWeights(swap_on_epoch=True)],
        )
        averages = [to_numpy(v) for v in optimizer.inner_optimizer._model_variables_moving_average]
        # the last validation ran on the weights the model ends on: the EMA
        np.testing.assert_allclose(
            model.evaluate(x, y, batch_size=BATCH, verbose=0), history.history["val_loss"][-1], rtol=1e-5
        )
        final = weights(model)
        assert any(not np.allclose(a, b) for a, b in zip(final, raw.values, strict=True))
        return final, history.history["val_loss"], averages

    inside, val_inside, averages = run(keras.optimizers.LossScaleOptimizer)
    alone, val_alone, _ = run(lambda optimizer: optimizer)
    np.testing.assert_allclose(val_inside, val_alone, rtol=1e-5)
    for a, b in zip(inside, alone, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the model ends on the EMA weights
    for w, average in zip(inside, averages, strict=True):
        np.testing.assert_allclose(w, average, rtol=1e-6)


@pytest.mark.skipif(BACKEND == "torch", reason="Keras's torch trainer refuses steps_per_execution > 1")
@pytest.mark.parametrize("steps_per_execution", [3, 4])
def test_steps_per_execution_trains_as_one_step_per_call(steps_per_execution):
    """Several steps per compiled call (`steps_per_execution`), a NaN batch
    among them and a LookAhead period (3) that does not divide them: the
    same weights, counters and skipped steps as one step per call."""
    x, y = dataset()
    x["image"][20, 0, 0, 0] = np.nan  # batch 2

    def run(steps):
        model = small_model()
        optimizer = keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=3)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=steps)
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
        counters = [int(to_numpy(c)) for c in (optimizer.iterations, optimizer.skipped_steps)]
        return [to_numpy(w) for w in model.weights], counters

    (weights, counters), (expected, expected_counters) = run(steps_per_execution), run(1)
    assert counters == expected_counters == [14, 2]
    for w, e in zip(weights, expected, strict=True):
        np.testing.assert_allclose(w, e, rtol=1e-6, atol=1e-7)


def train_steps(model, x, y, start, stop):
    sl = slice(start * BATCH, stop * BATCH)
    model.fit({k: v[sl] for k, v in x.items()}, y[sl], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _straight_saved_and_resumed(make, tmp_path):
    """`make()` trained 8 steps straight; another trained 3 steps and saved;
    and the model loaded from that file (not trained yet)."""
    x, y = dataset()
    straight = make()
    train_steps(straight, x, y, 0, 3)
    train_steps(straight, x, y, 3, 8)
    first = make()
    train_steps(first, x, y, 0, 3)
    path = os.path.join(tmp_path, "m.keras")
    first.save(path)
    return straight, first, keras.models.load_model(path)


def test_save_load_resume_continues_exactly(tmp_path):
    """Save mid-LookAhead period (3 of 5 steps), reload, go on: identical to
    an uninterrupted run, all SING and host state included."""
    x, y = dataset()

    def make():
        model = small_model()
        compile_(model, keras_sing.SING(keras.optimizers.AdamW(1e-2, weight_decay=1e-2), lookahead_steps=5))
        return model

    straight, first, resumed = _straight_saved_and_resumed(make, tmp_path)
    assert isinstance(resumed.optimizer, keras_sing.SING)
    assert resumed.optimizer.get_config() == first.optimizer.get_config()
    for a, b in zip(resumed.optimizer.variables, first.optimizer.variables, strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    train_steps(resumed, x, y, 3, 8)
    for a, b in zip(weights(resumed), weights(straight), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(to_numpy(resumed.optimizer.iterations)) == 8


def test_multi_optimizer_with_sing_resumes_exactly(tmp_path):
    """A `MultiOptimizer` holding a SING (for the body) and an AdamW (for
    the head), saved mid-LookAhead period, reloaded, trained on: identical
    to an uninterrupted run, both optimizers' state included."""
    x, y = dataset()

    def make():
        model = small_model()
        compile_(model, keras.optimizers.MultiOptimizer(
            keras.optimizers.OptimizerMap(
                keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=5),
                {"logits/.*": keras.optimizers.AdamW(1e-3)},
            )
        ))
        return model

    straight, first, resumed = _straight_saved_and_resumed(make, tmp_path)
    sings = [o for o in resumed.optimizer.optimizers if isinstance(o, keras_sing.SING)]
    assert len(sings) == 1 and len(resumed.optimizer.optimizers) == 2
    for a, b in zip(resumed.optimizer.variables, first.optimizer.variables, strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert int(to_numpy(sings[0].iterations)) == 3
    train_steps(resumed, x, y, 3, 8)
    for a, b in zip(weights(resumed), weights(straight), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(resumed.optimizer.variables, straight.optimizer.variables, strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)


def test_resume_from_weights_with_a_hand_built_optimizer_continues_exactly(tmp_path):
    """`load_weights` restores the optimizer's state only if it is built,
    so Keras asks for `model.optimizer.build(model.trainable_variables)`
    first. No model builds SING there: it reads the layers at the first
    `fit` step instead, so attention and depthwise kernels keep their
    exact axes (they were guessed, and the resumed run went elsewhere)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6, 4)).astype("float32")
    y = rng.standard_normal((32, 2)).astype("float32")

    def make():
        keras.utils.set_random_seed(0)
        inp = keras.Input((6, 4))
        a = keras.layers.MultiHeadAttention(2, 4, name="mha")(inp, inp)
        d = keras.layers.DepthwiseConv1D(3, name="dw")(a)
        model = keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(d)))
        model.compile(optimizer=keras_sing.SING(keras.optimizers.AdamW(1e-2)), loss="mse")
        return model

    def fit(model, start, stop):
        model.fit(x[start * 8 : stop * 8], y[start * 8 : stop * 8], batch_size=8, shuffle=False, verbose=0)

    straight = make()
    fit(straight, 0, 2)
    fit(straight, 2, 4)
    first = make()
    fit(first, 0, 2)
    path = os.path.join(tmp_path, "m.weights.h5")
    first.save_weights(path)
    resumed = make()
    with pytest.warns(UserWarning, match="If a model's `fit`"):
        resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(path)
    fit(resumed, 2, 4)
    for a, b in zip(weights(resumed), weights(straight), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        # JAX on CPU cannot run MultiHeadAttention's float16 einsum with any
        # optimizer ("precision 'F16_F16_F32' is not supported by dot_general
        # on CPU"), so that one case drops the attention block.
        attention = not (BACKEND == "jax" and policy == "mixed_float16")
        model = small_model(attention=attention)
        compile_(model, keras_sing.SING(keras.optimizers.AdamW(1e-2)))
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            assert isinstance(model.optimizer.inner_optimizer, keras_sing.SING)
        x, y = dataset(32)
        before = weights(model)
        history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        after = weights(model)
        assert all(np.all(np.isfinite(w)) for w in after)
        assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def gradients_fn(model, loss_fn):
    """A backend's own way of taking gradients, for a custom loop."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def grads(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            return tape.gradient(loss, model.trainable_variables)

    elif BACKEND == "torch":

        def grads(x, y):
            model.zero_grad()
            loss = loss_fn(y, model(x, training=True))
            loss.backward()
            return [v.value.grad for v in model.trainable_variables]

    else:
        import jax

        def grads(x, y):
            tv = [v.value for v in model.trainable_variables]
            ntv = [v.value for v in model.non_trainable_variables]

            def loss_of(tv_):
                out, _ = model.stateless_call(tv_, ntv, x, training=True)
                return loss_fn(y, out)

            return jax.grad(loss_of)(tv)

    return grads


def test_custom_loop_with_apply_gradients():
    model = small_model()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2)
    grads = gradients_fn(model, loss_fn)
    x, y = dataset(16)
    x = {k: keras.ops.convert_to_tensor(v) for k, v in x.items()}
    y = keras.ops.convert_to_tensor(y)
    losses = []
    for _ in range(6):
        g = grads(x, y)
        opt.apply_gradients(zip(g, model.trainable_variables, strict=True))
        losses.append(float(to_numpy(loss_fn(y, model(x)))))
    assert int(to_numpy(opt.iterations)) == 6
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
