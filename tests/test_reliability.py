"""Non-finite gradients never reach the weights; edge inputs; resume mid-
accumulation; property-based checks against the oracle (hypothesis)."""

import os

import keras
import numpy as np
import pytest
import reference
from conftest import BACKEND
from conftest import assert_close
from conftest import to_numpy
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_sing


def tensor(x, dtype="float32"):
    return keras.ops.convert_to_tensor(np.asarray(x, dtype))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_step_is_skipped_whole(bad):
    """Weights, host moments, the step counter and LookAhead are untouched;
    the next finite steps continue as if the bad one never happened."""
    init = [np.random.standard_normal((4, 3)), np.random.standard_normal((3,))]
    grads = [[np.random.standard_normal(a.shape) for a in init] for _ in range(6)]
    poisoned = [g.copy() for g in grads[2]]
    poisoned[1][0] = bad

    def run(steps):
        vs = [keras.Variable(a.astype("float32")) for a in init]
        opt = keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2)
        for step in steps:
            opt.apply([tensor(g) for g in step], vs)
        return opt, [to_numpy(v) for v in vs]

    opt, got = run(grads[:2] + [poisoned] + grads[2:])
    _, expected = run(grads)
    assert int(to_numpy(opt.skipped_steps)) == 1
    assert int(to_numpy(opt.iterations)) == 6
    for a, b in zip(got, expected, strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)
    for v in opt.variables:
        assert np.all(np.isfinite(to_numpy(v)))


def test_on_nonfinite_ignore_lets_nan_through():
    v = keras.Variable(np.ones((3,), "float32"))
    opt = keras_sing.SING(keras.optimizers.SGD(0.1), on_nonfinite="ignore")
    opt.apply([tensor([np.nan, 1.0, 1.0])], [v])
    assert np.isnan(to_numpy(v)).any()


def test_on_nonfinite_raise_skips_then_raises_eagerly():
    v = keras.Variable(np.ones((3, 2), "float32"))
    opt = keras_sing.SING(keras.optimizers.AdamW(0.1), on_nonfinite="raise")
    opt.apply([tensor(np.random.standard_normal((3, 2)))], [v])
    before = to_numpy(v).copy()
    bad = np.ones((3, 2))
    bad[1, 1] = np.nan
    with pytest.raises(FloatingPointError, match=r"NaN or inf at step 2.*on_nonfinite='skip'"):
        opt.apply([tensor(bad)], [v])
    np.testing.assert_array_equal(to_numpy(v), before)
    assert int(to_numpy(opt.skipped_steps)) == 1
    assert int(to_numpy(opt.iterations)) == 1
    opt.apply([tensor(np.random.standard_normal((3, 2)))], [v])  # goes on
    assert int(to_numpy(opt.iterations)) == 2


# The compiled modes that can raise from a tensor: a TF graph (not XLA),
# jax.jit (a debug callback), torch (a host read). XLA-compiled TF steps
# cannot, and say so: test_on_nonfinite_raise_under_tf_xla_names_the_fix.
RAISING_JIT = {"tensorflow": False, "jax": True, "torch": "auto"}[BACKEND]


def test_fit_stops_with_on_nonfinite_raise_and_weights_stay_clean():
    """fit stops at the NaN batch with SING's message; the weights are those
    after the batches before it (the bad step was skipped, not applied)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6)).astype("float32")
    y = rng.standard_normal((32, 2)).astype("float32")
    x_bad = x.copy()
    x_bad[2 * 8 + 5, 0] = np.nan  # batch index 2 (batch size 8)

    def model_and_optimizer():
        model = nan_batch_model()
        opt = keras_sing.SING(keras.optimizers.AdamW(1e-2), on_nonfinite="raise")
        model.compile(opt, "mse", jit_compile=RAISING_JIT)
        return model

    model = model_and_optimizer()
    with pytest.raises(Exception, match="SING: a gradient holds NaN or inf") as error:
        model.fit(x_bad, y, batch_size=8, shuffle=False, epochs=1, verbose=0)
    assert "on_nonfinite" in str(error.value)
    if BACKEND == "jax":
        # Keras's JAX fit donates the state buffers to each compiled step, so
        # an error raised inside the step leaves the model's variables
        # deleted, whatever raised it (documented in docs/distributed.md).
        with pytest.raises(RuntimeError, match="deleted"):
            to_numpy(model.weights[0])
        return
    first_two = model_and_optimizer()
    first_two.fit(x[:16], y[:16], batch_size=8, shuffle=False, epochs=1, verbose=0)
    for a, b in zip(model.weights, first_two.weights, strict=True):
        assert np.all(np.isfinite(to_numpy(a)))
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit of stateless_apply is JAX's")
def test_on_nonfinite_raise_under_jax_jit_keeps_undonated_state():
    import jax

    v = keras.Variable(np.ones((3, 2), "float32"))
    opt = keras_sing.SING(keras.optimizers.AdamW(0.1), on_nonfinite="raise")
    opt.build([v])
    step = jax.jit(opt.stateless_apply)
    # random gradients: not constant along the fan-in, so each step moves v
    good = np.random.default_rng(0).standard_normal((2, 3, 2))
    state, weights = [x.value for x in opt.variables], [v.value]
    weights, state = step(state, [tensor(good[0])], weights)
    bad = np.ones((3, 2))
    bad[0, 0] = np.inf
    with pytest.raises(Exception, match="NaN or inf at step 2"):
        jax.block_until_ready(step(state, [tensor(bad)], weights))
    before = to_numpy(weights[0])
    assert np.all(np.isfinite(before))  # inputs not donated: intact
    weights, state = step(state, [tensor(good[1])], weights)  # goes on
    after = to_numpy(weights[0])
    assert np.all(np.isfinite(after)) and np.max(np.abs(after - before)) > 1e-3
    index = {id(x): i for i, x in enumerate(opt.variables)}
    assert int(state[index[id(opt.inner_optimizer._iterations)]]) == 2
    assert int(state[index[id(opt._skipped_steps)]]) == 0  # the raised step's state was never returned


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit of stateless_apply is JAX's")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "config",
    [
        {},  # finiteness read from the step's own gradient norms
        {"exclude": "bias"},  # the bad gradient is an excluded variable's
        {"centralize": False, "normalize": False},
        {"accumulate": True},  # accumulation: a separate check of the gradients
        {"huge": True},  # finite 1e30 gradients are not mistaken for inf
        {"lookahead_steps": 1},  # the bad step is a LookAhead sync step
        {"host": {"global_clipnorm": 1.0}},  # clipping: a check of the raw gradients
        {"host": {"use_ema": True}},  # EMA: LookAhead inside the host's step
        {"host": {"beta_1": 0.5}, "softplus": False},
        {"host_class": "sgd"},  # a non-Adam host: its own update, selected after
    ],
    ids=[
        "norms", "excluded", "no_standardization", "accumulation", "huge_finite",
        "lookahead_sync_step", "clipping", "ema", "no_softplus", "sgd",
    ],
)
def test_jitted_step_skips_nonfinite_whatever_the_path(bad, config):
    import jax

    config = dict(config)
    accumulate, huge = config.pop("accumulate", False), config.pop("huge", False)
    host_kwargs = config.pop("host", {})
    scale = 1e30 if huge else 1.0
    kernel = keras.Variable(np.ones((4, 3), "float32"), name="kernel")
    bias = keras.Variable(np.ones((3,), "float32"), name="bias")
    if config.pop("host_class", None) == "sgd":
        host = keras.optimizers.SGD(1e-2, momentum=0.9)
    else:
        host = keras.optimizers.AdamW(1e-2, gradient_accumulation_steps=2 if accumulate else None, **host_kwargs)
    opt = keras_sing.SING(host, **config)
    opt.build([kernel, bias])
    step = jax.jit(opt.stateless_apply)
    state, weights = [v.value for v in opt.variables], [kernel.value, bias.value]
    good = [tensor(np.random.standard_normal((4, 3)) * scale), tensor(np.random.standard_normal(3) * scale)]
    weights, state = step(state, good, weights)
    bad_bias = np.random.standard_normal(3) * scale
    bad_bias[1] = bad
    new_weights, new_state = step(state, [good[0], tensor(bad_bias)], weights)
    skipped = _index_of(opt.variables, opt._skipped_steps)
    unchanged = [i for i in range(len(state)) if i != skipped]
    for a, b in zip(new_weights + [new_state[i] for i in unchanged], weights + [state[i] for i in unchanged], strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert int(to_numpy(new_state[skipped])) == int(to_numpy(state[skipped])) + 1
    if huge:  # and a finite step with them still applies
        moved, _ = step(state, good, weights)
        assert np.all(np.isfinite(to_numpy(moved[0])))
        assert not np.array_equal(to_numpy(moved[0]), to_numpy(weights[0]))


def _index_of(variables, variable):
    return next(i for i, v in enumerate(variables) if v is variable)


@pytest.mark.parametrize(
    "bad, expected",
    [(np.nan, False), (np.inf, False), (-np.inf, False), (3e38, True), (-3e38, True), (0.0, True)],
)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_all_finite_flags_nan_and_inf_and_never_overflows(bad, expected, dtype):
    from keras_sing.transforms import all_finite

    if dtype == "float16" and abs(bad) == 3e38:
        bad = np.sign(bad) * 6e4  # float16's largest finite values
    big = np.full((64, 64), 6e4 if dtype == "float16" else 3e38, dtype)  # sum would overflow
    g = np.ones((5, 3), dtype)
    g[2, 1] = bad
    assert bool(to_numpy(all_finite([tensor(big, dtype), tensor(g, dtype)]))) is expected
    assert bool(to_numpy(all_finite([]))) is True


def _trajectory(make_opt, steps, jitted, seed=0):
    """Weights and optimizer state after `steps` steps: jitted stateless
    (JAX's functional path) or eager `apply`."""
    import jax

    rng = np.random.default_rng(seed)
    kernel = keras.Variable(rng.standard_normal((4, 3)).astype("float32"), name="kernel")
    bias = keras.Variable(rng.standard_normal(3).astype("float32"), name="bias")
    opt = make_opt()
    opt.build([kernel, bias])
    step = jax.jit(opt.stateless_apply)
    state, weights = [v.value for v in opt.variables], [kernel.value, bias.value]
    for _ in range(steps):
        grads = [tensor(rng.standard_normal((4, 3))), tensor(rng.standard_normal(3))]
        if jitted:
            weights, state = step(state, grads, weights)
        else:
            opt.apply(grads, [kernel, bias])
    if not jitted:
        state, weights = opt.variables, [kernel, bias]
    return [to_numpy(x) for x in list(weights) + list(state)]


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit of stateless_apply is JAX's functional path")
@pytest.mark.parametrize(
    "make_opt",
    [
        lambda: keras_sing.SING(keras.optimizers.AdamW(1e-2, weight_decay=0.1), lookahead_steps=2, lookahead_alpha=0.7),
        lambda: keras_sing.SING(keras.optimizers.AdamW(1e-2, gradient_accumulation_steps=2), lookahead_steps=2),
        lambda: keras_sing.SING(keras.optimizers.AdamW(1e-2, use_ema=True), lookahead_steps=2),
        lambda: keras_sing.SING(keras.optimizers.SGD(0.1, momentum=0.9), lookahead_steps=3, on_nonfinite="ignore"),
    ],
    ids=["adamw_k2", "accumulation", "ema", "sgd_ignore"],
)
def test_jax_jitted_stateless_step_equals_eager_apply(make_opt):
    jitted = _trajectory(make_opt, steps=7, jitted=True)
    eager = _trajectory(make_opt, steps=7, jitted=False)
    for a, b in zip(jitted, eager, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="XLA drops assertions in TensorFlow steps only")
def test_on_nonfinite_raise_under_tf_xla_names_the_fix():
    model = nan_batch_model()
    model.compile(keras_sing.SING(on_nonfinite="raise"), "mse", jit_compile=True)
    with pytest.raises(ValueError, match="jit_compile=False"):
        model.fit(np.zeros((8, 6)), np.zeros((8, 2)), verbose=0)


def test_on_nonfinite_is_checked_and_serialized():
    with pytest.raises(ValueError, match="on_nonfinite"):
        keras_sing.SING(on_nonfinite="warn")
    for mode in ("skip", "raise", "ignore"):
        opt = keras_sing.SING(on_nonfinite=mode)
        clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
        assert clone.on_nonfinite == mode
    # configs written by keras_sing 0.1.0
    legacy = keras_sing.SING().get_config()
    del legacy["on_nonfinite"]
    for skip, mode in ((True, "skip"), (False, "ignore")):
        assert keras_sing.SING.from_config({**legacy, "skip_nonfinite": skip}).on_nonfinite == mode


def nan_batch_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)]
    )


@pytest.mark.parametrize("jit_compile", ["auto", True] if BACKEND != "torch" else ["auto"])
def test_fit_with_a_nan_batch_equals_fit_without_it(jit_compile):
    """A batch that makes the loss NaN at step 3 leaves the weights finite,
    and training continues exactly as if that batch was not in the data."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 6)).astype("float32")
    y = rng.standard_normal((48, 2)).astype("float32")
    x_bad = x.copy()
    x_bad[3 * 8 + 1, 2] = np.nan  # batch index 3 (batch size 8)
    keep = np.r_[0:24, 32:48]

    def fit(xs, ys):
        model = nan_batch_model()
        model.compile(keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2), "mse", jit_compile=jit_compile)
        model.fit(xs, ys, batch_size=8, shuffle=False, epochs=1, verbose=0)
        return model

    bad = fit(x_bad, y)
    clean = fit(x[keep], y[keep])
    assert int(to_numpy(bad.optimizer.skipped_steps)) == 1
    for a, b in zip(bad.weights, clean.weights, strict=True):
        assert np.all(np.isfinite(to_numpy(a)))
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)
    # and it keeps training afterwards
    history = bad.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_composes_with_loss_scale_optimizer():
    v = keras.Variable(np.ones((4, 2), "float32"))
    lso = keras.optimizers.LossScaleOptimizer(keras_sing.SING(keras.optimizers.AdamW(1e-2)), initial_scale=8.0)
    lso.build([v])

    def apply(grad):
        if BACKEND == "jax":  # LSO's stateful apply is not supported on JAX
            new_v, new_opt = lso.stateless_apply([x.value for x in lso.variables], [grad], [v.value])
            v.assign(new_v[0])
            for var, value in zip(lso.variables, new_opt, strict=True):
                var.assign(value)
        else:
            lso.apply([grad], [v])

    apply(tensor(np.full((4, 2), np.inf)))
    np.testing.assert_array_equal(to_numpy(v), 1.0)
    assert float(to_numpy(lso.dynamic_scale)) == 4.0  # LSO skipped it first
    assert int(to_numpy(lso.inner_optimizer.skipped_steps)) == 0
    apply(tensor(np.random.standard_normal((4, 2)) * 4.0))
    assert not np.allclose(to_numpy(v), 1.0)
    assert np.all(np.isfinite(to_numpy(v)))


def test_resume_mid_accumulation_and_mid_lookahead(tmp_path):
    """ModelCheckpoint after 3 micro-batches of accumulation 2 (mid-
    accumulation) and mid-LookAhead, load_model, continue: bit-identical to
    the uninterrupted run."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 6)).astype("float32")
    y = rng.standard_normal((64, 2)).astype("float32")

    def make():
        model = nan_batch_model()
        host = keras.optimizers.AdamW(1e-2, weight_decay=1e-2, gradient_accumulation_steps=2)
        model.compile(keras_sing.SING(host, lookahead_steps=2), "mse")
        return model

    def steps(model, a, b):
        model.fit(x[a * 8 : b * 8], y[a * 8 : b * 8], batch_size=8, shuffle=False, verbose=0)

    straight = make()
    steps(straight, 0, 3)
    steps(straight, 3, 8)
    first = make()
    path = os.path.join(tmp_path, "acc.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_freq=3)
    first.fit(x[:32], y[:32], batch_size=8, shuffle=False, verbose=0, callbacks=[checkpoint])
    resumed = keras.models.load_model(path)  # as saved after batch 3 of 4
    steps(resumed, 3, 8)
    assert_bit_identical(resumed, straight)


def test_backup_and_restore_resumes_exactly(tmp_path):
    """BackupAndRestore after an interrupted epoch: same weights as a run
    that was never interrupted."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 6)).astype("float32")
    y = rng.standard_normal((32, 2)).astype("float32")

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("preempted")

    def make():
        model = nan_batch_model()
        model.compile(keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=3), "mse")
        return model

    straight = make()
    straight.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = make()
    with pytest.raises(RuntimeError, match="preempted"):
        interrupted.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[backup, Interrupt()])
    resumed = make()
    for weight in resumed.weights:  # only the restore can bring them back
        weight.assign(np.zeros(weight.shape, weight.dtype))
    history = resumed.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[backup])
    assert history.epoch == [2, 3]  # resumed after the two epochs backed up
    assert_bit_identical(resumed, straight)


def assert_bit_identical(model, other):
    """Weights and every optimizer variable (host slots, LookAhead, counters,
    accumulators) equal bit for bit."""
    pairs = list(zip(model.weights, other.weights, strict=True))
    pairs += list(zip(model.optimizer.variables, other.optimizer.variables, strict=True))
    assert len(model.optimizer.variables) == len(other.optimizer.variables)
    for a, b in pairs:
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=a.path)


def test_frozen_layers_constraints_and_late_variables():
    keras.utils.set_random_seed(0)
    frozen = keras.layers.Dense(3, name="frozen")
    model = keras.Sequential([keras.Input((4,)), frozen, keras.layers.Dense(2, kernel_constraint=keras.constraints.NonNeg(), name="nonneg")])
    frozen.trainable = False
    model.compile(keras_sing.SING(keras.optimizers.AdamW(5e-2)), "mse")
    before = to_numpy(frozen.kernel)
    model.fit(np.random.standard_normal((32, 4)).astype("float32"), np.random.standard_normal((32, 2)).astype("float32"), batch_size=8, verbose=0)
    np.testing.assert_array_equal(to_numpy(frozen.kernel), before)
    assert to_numpy(model.get_layer("nonneg").kernel).min() >= 0.0
    # a variable the optimizer was not built with is refused by name
    late = keras.Variable(np.zeros((2,), "float32"), name="late")
    with pytest.raises(ValueError, match="Unknown variable.*recreate a new optimizer"):
        model.optimizer.apply([tensor(np.ones(2))], [late])


@pytest.mark.parametrize("host", ["adamw", "sgd"])
def test_lookahead_seeds_variables_whose_first_gradient_comes_later(host):
    """LookAhead's slow copy of a variable with no gradient at the first
    step (a `None` gradient, an `apply` on a subset) is its weight then, not
    zero: its first sync moves it by alpha towards where its own updates
    took it, as for a variable updated from the start. Oracle: the same
    updates without LookAhead, then `W <- W0 + alpha (W' - W0)`."""
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 2)).astype("float32") for _ in range(3)]
    make_host = {"adamw": lambda: keras.optimizers.AdamW(1e-2), "sgd": lambda: keras.optimizers.SGD(0.1, momentum=0.9)}[host]

    def run(**options):
        a = keras.Variable(np.ones((3, 2), "float32"), name="a")
        b = keras.Variable(np.full((3, 2), 10.0, "float32"), name="b")
        opt = keras_sing.SING(make_host(), lookahead_steps=2, **options)
        opt.build([a, b])
        opt.apply([tensor(grads[0])], [a])  # step 1: `b` has no gradient
        opt.apply([tensor(grads[1]), tensor(grads[2])], [a, b])  # step 2: sync
        return to_numpy(a), to_numpy(b)

    (a, b), (a_fast, b_fast) = run(), run(lookahead=False)
    np.testing.assert_allclose(b, 10.0 + 0.5 * (b_fast - 10.0), rtol=1e-6)
    np.testing.assert_allclose(a, 1.0 + 0.5 * (a_fast - 1.0), rtol=1e-6)
    assert np.abs(b - 10.0).max() < 0.1  # the old seed (zero) halved it



@pytest.mark.parametrize("host", ["adamw", "sgd"])
def test_lookahead_starts_at_the_weights_when_the_host_stepped_before(host):
    """A host that stepped before SING was built (its first update, where
    LookAhead's slow copy is seeded, is past) starts LookAhead from the
    weights at build, not from zeros. Oracle: the host's own step, then
    SING's step without LookAhead, then `W <- W1 + alpha (W' - W1)` at the
    sync (the host's step 2, with k=2)."""
    rng = np.random.default_rng(0)
    grads = [tensor(rng.standard_normal((3, 2))) for _ in range(2)]
    make_host = {"adamw": lambda: keras.optimizers.AdamW(1e-2), "sgd": lambda: keras.optimizers.SGD(0.1, momentum=0.9)}[host]

    def run(**options):
        w = keras.Variable(np.ones((3, 2), "float32"), name="w")
        inner = make_host()
        inner.apply_gradients([(grads[0], w)])  # the host's step 1, alone
        after_host = to_numpy(w)
        keras_sing.SING(inner, lookahead_steps=2, **options).apply_gradients([(grads[1], w)])
        return after_host, to_numpy(w)

    (w1, w), (_, w_fast) = run(), run(lookahead=False)
    np.testing.assert_allclose(w, w1 + 0.5 * (w_fast - w1), rtol=1e-6)
    assert np.abs(w - 1.0).max() < 0.1  # a zero slow copy halved it


def test_sing_of_an_already_trained_model_optimizer_keeps_the_weights():
    """`compile(optimizer=SING(model.optimizer))` after a first `fit`: with a
    learning rate of 0, SING's steps, LookAhead's syncs included, leave
    every weight as the first `fit` left it."""
    x = np.random.standard_normal((16, 3)).astype("float32")
    y = np.random.standard_normal((16, 2)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss="mse")
    model.fit(x, y, batch_size=8, verbose=0)
    model.optimizer.learning_rate = 0.0
    trained = [to_numpy(w) for w in model.weights]
    model.compile(optimizer=keras_sing.SING(model.optimizer, lookahead_steps=2), loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # syncs at steps 4 and 6
    for before, w in zip(trained, model.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(w), before)


def test_build_twice_is_a_no_op():
    """As Keras's own optimizers: a second `build` (a LossScaleOptimizer
    built around a built SING) keeps SING's state and its variables."""
    w = keras.Variable(np.ones((3, 2), "float32"), name="w")
    opt = keras_sing.SING(keras.optimizers.SGD(0.1, momentum=0.9), lookahead_steps=2)
    # not constant along the fan-in (axis 0), so the step moves w, the
    # momentum and the recorded norm away from what a fresh build holds
    opt.apply_gradients([(tensor(np.arange(6.0).reshape(3, 2)), w)])
    state = [(id(v), to_numpy(v)) for v in opt.variables]
    fresh = keras_sing.SING(keras.optimizers.SGD(0.1, momentum=0.9), lookahead_steps=2)
    fresh.build([keras.Variable(to_numpy(w), name="w")])
    assert any(
        not np.array_equal(value, to_numpy(v))
        for (_, value), v in zip(state, fresh.variables, strict=True)
        if value.shape == tuple(v.shape)
    ), "the step left SING's state as a fresh build holds it: the test could not see a reset"
    opt.build([w])
    keras.optimizers.LossScaleOptimizer(opt).build([w])
    assert [id(v) for v in opt.variables] == [i for i, _ in state]
    for (_, value), v in zip(state, opt.variables, strict=True):
        np.testing.assert_array_equal(to_numpy(v), value)

def test_variables_added_after_the_first_step():
    """Unfreezing a layer after training adds trainable variables. As with
    Keras's own optimizers, the built optimizer refuses them with an error
    that names the fix (a new optimizer), and the fix trains them."""
    x = np.random.standard_normal((16, 4)).astype("float32")
    y = np.random.standard_normal((16, 2)).astype("float32")

    def trained_then_unfrozen():
        keras.utils.set_random_seed(0)
        base = keras.layers.Dense(3, name="base")
        model = keras.Sequential([keras.Input((4,)), base, keras.layers.Dense(2, name="head")])
        base.trainable = False
        model.compile(keras_sing.SING(keras.optimizers.AdamW(1e-2)), "mse")
        model.fit(x, y, verbose=0)
        base.trainable = True
        return model, base

    model, _ = trained_then_unfrozen()
    model.compile(model.optimizer, "mse")
    with pytest.raises(ValueError, match="new optimizer|recreate a new optimizer instance"):
        model.fit(x, y, verbose=0)
    # (Keras's JAX trainer leaves the model's variables unusable after any
    # error inside its first traced step, with its own optimizers too; so
    # the fix is shown on a fresh model.)
    model, base = trained_then_unfrozen()
    before = to_numpy(base.kernel).copy()
    model.compile(keras_sing.SING(keras.optimizers.AdamW(1e-2)), "mse")
    model.fit(x, y, verbose=0)
    after = to_numpy(base.kernel)
    assert np.all(np.isfinite(after)) and not np.allclose(after, before)



def test_a_built_sing_refuses_another_models_variables():
    """A SING serves the model it was built with, as Keras's own optimizers:
    a second model of other shapes gets an error that names the fix (on
    JAX, where `fit` passes values, SING's own; on TF and torch, Keras's
    "Unknown variable"), not a LookAhead sync towards the first model."""
    x = np.random.standard_normal((16, 4)).astype("float32")
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2))
    first = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    first.compile(opt, "mse")
    first.fit(x, np.zeros((16, 3), "float32"), batch_size=8, verbose=0)
    second = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    second.compile(opt, "mse")
    with pytest.raises(ValueError, match="SING was built for other variables.*new optimizer|recreate a new optimizer instance"):
        second.fit(x, np.zeros((16, 5), "float32"), batch_size=8, verbose=0)
    # the functional step itself (Keras's JAX trainer leaves the variables
    # unusable after an error inside its first traced step: a fresh SING)
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2))
    opt.build([keras.Variable(np.ones((4, 3), "float32"), name="kernel"), keras.Variable(np.ones((3,), "float32"), name="bias")])
    other = [keras.ops.ones((4, 5)), keras.ops.zeros((5,))]
    with pytest.raises(ValueError, match=r"\(4, 3\), \(4, 5\)"):
        opt.stateless_apply([v.value for v in opt.variables], other, other)

SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)


@settings(max_examples=25, deadline=None)
@given(
    shape=SHAPES,
    log_scale=st.floats(-30, 30),
    dtype=st.sampled_from(["float32", "float64", "float16", "bfloat16"]),
    constant=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_standardized_step_property(shape, log_scale, dtype, constant, seed):
    """Random shapes (size-1 and empty axes included), dtypes and scales:
    no crash, no NaN, and the oracle's direction where it is defined."""
    if dtype in ("float16", "bfloat16"):
        log_scale = float(np.clip(log_scale, -3, 3))  # inside float16's range
    rng = np.random.default_rng(seed)
    g = np.full(shape, 1.5) if constant else rng.standard_normal(shape)
    g = (g * 10.0**log_scale).astype(dtype if dtype != "bfloat16" else "float32")
    w = keras.Variable(np.zeros(shape, "float32"), dtype=dtype)
    opt = keras_sing.SING(keras.optimizers.SGD(1.0), lookahead=False)
    opt.apply([keras.ops.convert_to_tensor(g, dtype=dtype)], [w])
    step = -to_numpy(keras.ops.cast(w, "float32")).astype(np.float64)
    assert np.all(np.isfinite(step))
    axes = reference.keras_fan_in_axes(shape)
    # a fan-in of size 1 is normalized only (SING warns at build)
    degenerate = bool(axes) and int(np.prod([shape[a] for a in axes])) == 1
    expected = reference.standardize(
        np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.convert_to_tensor(g, dtype=dtype), "float32")), np.float64),
        () if degenerate else axes,
    )
    if constant and len(shape) > 1 and not degenerate:
        assert np.all(step == 0.0)  # centralizes to exactly zero
    if step.size:
        assert_close(step, expected, rtol=1e-5 if dtype in ("float32", "float64") else 2e-2)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.IndexedSlices gradients are TensorFlow's")
def test_sparse_embedding_gradient_matches_dense_oracle():
    """An Embedding's IndexedSlices gradient (repeated ids included) gives
    the dense oracle's standardized step (per-row centralization)."""
    import tensorflow as tf

    table = keras.Variable(np.zeros((6, 4), "float32"), name="embeddings")
    ids = tf.constant([1, 3, 1, 5])
    values = tf.constant(np.random.standard_normal((4, 4)).astype("float32"))
    sparse = tf.IndexedSlices(values, ids, dense_shape=tf.constant([6, 4]))
    dense = tf.convert_to_tensor(sparse).numpy()
    opt = keras_sing.SING(keras.optimizers.SGD(1.0), lookahead=False)
    opt.apply([sparse], [table])
    assert_close(-to_numpy(table), reference.standardize(dense, (1,)))


def _finite_cases():
    rng = np.random.default_rng(0)
    normal = rng.standard_normal((6, 5)).astype("float32")
    cases = {"normal": normal, "huge": np.full((64, 64), 3e38, "float32")}
    for name, bad in [("nan", np.nan), ("inf", np.inf), ("minus_inf", -np.inf)]:
        g = normal.copy()
        g[2, 3] = bad
        cases[name] = g
    return cases


@pytest.mark.parametrize("axes", [None, (0,)])
@pytest.mark.parametrize("case", ["normal", "huge", "nan", "inf", "minus_inf"])
def test_statistics_flag_is_all_finite(case, axes):
    """The finiteness SING reads from its norms is `all_finite`'s, also
    where the norm itself overflows float32 (a 64x64 gradient of 3e38 is
    finite: its step is not skipped)."""
    from keras_sing import transforms

    g = _finite_cases()[case]
    _, norm, finite = transforms.standardization_statistics(tensor(g), axes)
    assert bool(to_numpy(finite)) is bool(to_numpy(transforms.all_finite([tensor(g)])))
    assert bool(to_numpy(finite)) is (case in ("normal", "huge"))
    if case == "huge":  # the norm overflows (a constant unit centralizes to 0)
        assert to_numpy(norm) == (0.0 if axes else np.inf)
    _, _, empty_finite = transforms.standardization_statistics(tensor(np.zeros((0, 3), "float32")), axes)
    assert bool(to_numpy(empty_finite))


@pytest.mark.parametrize("case", ["huge", "nan", "inf", "minus_inf"])
def test_skip_decision_from_norms_matches_the_gradients(case):
    """`apply` skips exactly the steps whose raw gradients hold a NaN or an
    inf, when it reads finiteness from SING's own norms (no clipping,
    accumulation or loss-scale factor)."""
    g = _finite_cases()[case][:6, :5].reshape(-1)  # 1-D: not centralized
    bias = keras.Variable(np.ones((30,), "float32"), name="bias")
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2))
    opt.apply([tensor(g)], [bias])
    skipped = int(to_numpy(opt.skipped_steps))
    assert skipped == (0 if case == "huge" else 1)
    if case == "huge":  # its norm overflows float32: a zero direction, applied
        assert np.all(np.isfinite(to_numpy(bias)))
        assert int(to_numpy(opt.iterations)) == 1


def test_a_host_built_for_other_variables_is_refused():
    """SING reads the host's slots by the host's own index: a host already
    built for other variables (or another order) would pair each variable
    with another's slots, so SING refuses it by name. A host built for the
    same variables in the same order is used as is."""
    a = keras.Variable(np.ones((3, 2), "float32"), name="a")
    b = keras.Variable(np.full((4,), 10.0, "float32"), name="b")
    host = keras.optimizers.AdamW(1e-2)
    host.build([b, a])
    with pytest.raises(ValueError, match="already built for other variables.*not built yet"):
        keras_sing.SING(host).build([a, b])
    grads = [tensor(np.arange(6.0).reshape(3, 2)), tensor(np.ones(4))]

    def step(prebuilt):
        va, vb = keras.Variable(to_numpy(a), name="a"), keras.Variable(to_numpy(b), name="b")
        host = keras.optimizers.AdamW(1e-2)
        if prebuilt:
            host.build([va, vb])
        keras_sing.SING(host).apply(grads, [va, vb])
        return to_numpy(va), to_numpy(vb)

    for x, y in zip(step(True), step(False), strict=True):
        np.testing.assert_array_equal(x, y)
