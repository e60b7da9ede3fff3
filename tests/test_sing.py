"""SING as an optimizer: properties, toggles, hosts, LookAhead, rules."""

import keras
import numpy as np
import pytest
import reference
from conftest import assert_close
from conftest import to_numpy

import keras_sing


def variables_like(arrays):
    return [keras.Variable(np.asarray(a, "float32"), name=f"v{i}") for i, a in enumerate(arrays)]


def run(opt, init, grads_per_step, lrs=None):
    variables = variables_like(init)
    for s, grads in enumerate(grads_per_step):
        if lrs is not None:
            opt.learning_rate = lrs[s]
        opt.apply([keras.ops.convert_to_tensor(np.asarray(g, "float32")) for g in grads], variables)
    return [to_numpy(v) for v in variables]


def random_problem(shapes=((6, 4), (3, 3, 2, 5), (5,), ()), steps=8, scale=1.0):
    init = [np.random.standard_normal(s) for s in shapes]
    grads = [[np.random.standard_normal(s) * scale for s in shapes] for _ in range(steps)]
    return init, grads


@pytest.mark.parametrize(
    "toggles",
    [
        dict(),
        dict(grad_central=False),
        dict(grad_norm=False),
        dict(softplus=False),
        dict(lookahead_active=False),
        dict(grad_central=False, grad_norm=False, softplus=False, lookahead_active=False),
        dict(la_mergetime=1, la_alpha=0.3),
        dict(weight_decay=0.05, betas=(0.8, 0.95), beta_softplus=10.0),
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "defaults",
)
def test_adamw_host_matches_oracle(toggles):
    """20 random steps, each toggle, against the float64 oracle."""
    hp = dict(lr=1e-2, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
    hp.update(toggles)
    init, grads = random_problem(steps=20)
    ref = reference.ReferenceSING(dict(enumerate(init)), **hp)
    for g in grads:
        ref.step(dict(enumerate(g)))
    opt = keras_sing.SING(
        keras.optimizers.AdamW(
            learning_rate=hp["lr"],
            weight_decay=hp["weight_decay"],
            beta_1=hp["betas"][0],
            beta_2=hp["betas"][1],
        ),
        epsilon=hp["eps"],
        centralize=hp.get("grad_central", True),
        normalize=hp.get("grad_norm", True),
        softplus=hp.get("softplus", True),
        softplus_beta=hp.get("beta_softplus", 50.0),
        lookahead=hp.get("lookahead_active", True),
        lookahead_steps=hp.get("la_mergetime", 5),
        lookahead_alpha=hp.get("la_alpha", 0.5),
    )
    out = run(opt, init, grads)
    for i, w in enumerate(out):
        assert_close(w, ref.w[i], rtol=1e-5)


def test_everything_off_is_the_host_alone():
    """All toggles off: SGD is SGD exactly; AdamW is Keras AdamW up to where
    each adds epsilon (float32 precision here)."""
    off = dict(centralize=False, normalize=False, softplus=False, lookahead=False)
    init, grads = random_problem()
    for make in [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.01),
    ]:
        plain = run(make(), init, grads)
        wrapped = run(keras_sing.SING(make(), epsilon=1e-7, **off), init, grads)
        for a, b in zip(wrapped, plain, strict=True):
            if isinstance(make(), keras.optimizers.SGD):
                # Exact up to the order of float32 operations (the fused
                # torch SGD and the per-variable one round differently).
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
            else:
                # AdamW: SING decays only ndim > 1 (the paper's rule), so
                # compare kernels; 1-D and scalars differ by the decay.
                if a.ndim > 1:
                    assert_close(a, b, rtol=1e-5)


@pytest.mark.parametrize(
    "make_host",
    [
        lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        lambda: keras.optimizers.Lion(1e-3),
        lambda: keras.optimizers.RMSprop(1e-3),
        lambda: keras.optimizers.Adagrad(1e-2),
        lambda: keras.optimizers.Nadam(1e-3),
    ],
    ids=["sgd", "lion", "rmsprop", "adagrad", "nadam"],
)
def test_other_hosts_see_standardized_gradients(make_host):
    """SING(host) = host fed the oracle's standardized gradients, then
    LookAhead as in the oracle."""
    init, grads = random_problem(steps=7)
    got = run(keras_sing.SING(make_host(), lookahead_steps=3, lookahead_alpha=0.5), init, grads)
    std = [
        [reference.standardize(g, reference.keras_fan_in_axes(g.shape)) for g in step]
        for step in grads
    ]
    variables = variables_like(init)
    host = make_host()
    slow = [np.array(a, dtype=np.float64) for a in init]
    for t, step in enumerate(std, start=1):
        host.apply([keras.ops.convert_to_tensor(s.astype("float32")) for s in step], variables)
        if t % 3 == 0:
            for i, v in enumerate(variables):
                merged = 0.5 * to_numpy(v) + 0.5 * slow[i]
                v.assign(merged.astype("float32"))
                slow[i] = merged
    for a, v in zip(got, variables, strict=True):
        assert_close(a, to_numpy(v), rtol=1e-5)


def test_lookahead_hand_solved_path():
    """SGD(lr=1) on a scalar with gradient 1, k=3, alpha=0.5:
    x: 3 -> 2 -> 1 -> 0, sync 0.5*0 + 0.5*3 = 1.5 -> 0.5 -> -0.5 -> -1.5,
    sync 0.5*(-1.5) + 0.5*1.5 = 0."""
    x = keras.Variable(3.0)
    opt = keras_sing.SING(
        keras.optimizers.SGD(1.0), centralize=False, normalize=False,
        lookahead_steps=3, lookahead_alpha=0.5,
    )
    path = []
    for _ in range(6):
        opt.apply([np.float32(1.0)], [x])
        path.append(float(to_numpy(x)))
    assert path == [2.0, 1.0, 1.5, 0.5, -0.5, 0.0]


def test_lookahead_steps_one_alpha_one_is_no_lookahead():
    init, grads = random_problem()
    a = run(keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=1, lookahead_alpha=1.0), init, grads)
    b = run(keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead=False), init, grads)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_slow_copy_is_taken_at_the_first_update_not_at_build():
    x = keras.Variable(0.0)
    opt = keras_sing.SING(
        keras.optimizers.SGD(1.0), centralize=False, normalize=False,
        lookahead_steps=2, lookahead_alpha=0.5,
    )
    opt.build([x])
    x.assign(10.0)  # e.g. weights loaded after compile
    opt.apply([np.float32(1.0)], [x])
    opt.apply([np.float32(1.0)], [x])
    # 10 -> 9 -> 8, sync with S = 10: 9 (S = 0 would give 4).
    assert float(to_numpy(x)) == 9.0


def test_mean_preserved_per_output_unit():
    """Centralized directions have zero mean per output unit, so with a
    linear host (SGD with momentum), no decay and no LookAhead, the
    per-output-unit mean of a kernel never moves."""
    w0 = np.random.standard_normal((7, 3, 4))
    x = keras.Variable(w0.astype("float32"))
    opt = keras_sing.SING(keras.optimizers.SGD(0.5, momentum=0.9), lookahead=False)
    for _ in range(10):
        opt.apply([np.random.standard_normal(w0.shape).astype("float32") * 5], [x])
    w = to_numpy(x)
    assert np.abs(w - w0).max() > 0.1
    np.testing.assert_allclose(w.mean(axis=(0, 1)), w0.mean(axis=(0, 1)), atol=1e-5)


def test_loss_scale_invariance_of_the_step():
    """Gradients x 1e-6 .. 1e6 give the same trajectory (to eps / ||cG||)."""
    init, grads = random_problem(shapes=((32, 16), (16,)), steps=6, scale=30.0)
    base = run(keras_sing.SING(keras.optimizers.AdamW(1e-2, weight_decay=0.01)), init, grads)
    for c in [1e-6, 1e-3, 1e3, 1e6]:
        scaled = [[g * c for g in step] for step in grads]
        out = run(keras_sing.SING(keras.optimizers.AdamW(1e-2, weight_decay=0.01)), init, scaled)
        for a, b in zip(out, base, strict=True):
            assert_close(a, b, rtol=5e-5)


@pytest.mark.parametrize("softplus", [True, False])
def test_zero_gradient_gives_no_move_and_no_nan(softplus):
    init = [np.random.standard_normal(s) for s in [(4, 3), (3,), ()]]
    zeros = [[np.zeros_like(a) for a in init]] * 3
    out = run(keras_sing.SING(keras.optimizers.AdamW(1e-1, weight_decay=0.0), softplus=softplus), init, zeros)
    for a, b in zip(out, init, strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1e10, 1e30])
def test_extreme_gradient_scales_match_oracle(scale):
    """Finite gradients from 1e-30 to 1e30: no step is skipped (the sum of
    squares would overflow float32 at 1e30) and the weights follow the
    float64 oracle."""
    init, grads = random_problem(scale=scale)
    ref = reference.ReferenceSING(dict(enumerate(init)))
    for g in grads:
        ref.step(dict(enumerate(g)))
    opt = keras_sing.SING()
    out = run(opt, init, grads)
    assert int(to_numpy(opt.skipped_steps)) == 0
    for i, w in enumerate(out):
        assert np.all(np.isfinite(w))
        assert_close(w, ref.w[i], rtol=1e-5)


def test_learning_rate_and_iterations_are_the_hosts():
    host = keras.optimizers.AdamW(1e-3)
    opt = keras_sing.SING(host)
    opt.learning_rate = 0.25
    assert float(to_numpy(host.learning_rate)) == 0.25
    assert float(to_numpy(opt.learning_rate)) == 0.25
    x = keras.Variable(np.ones((2, 2), "float32"))
    opt.apply([np.ones((2, 2), "float32")], [x])
    assert int(to_numpy(opt.iterations)) == int(to_numpy(host.iterations)) == 1


def test_host_schedule_advances():
    """The trap: a warm-up schedule evaluated at the host's own counter."""
    schedule = keras.optimizers.schedules.PolynomialDecay(0.0, 10, end_learning_rate=1.0)
    x = keras.Variable(np.zeros((), "float32"))
    opt = keras_sing.SING(keras.optimizers.SGD(schedule), centralize=False, lookahead=False)
    seen = []
    for _ in range(4):
        seen.append(float(to_numpy(opt.learning_rate)))
        opt.apply([np.float32(1.0)], [x])
    np.testing.assert_allclose(seen, [0.0, 0.1, 0.2, 0.3], atol=1e-6)
    # x moved by -(0 + 0.1 + 0.2 + 0.3) (the normalized gradient is 1)
    np.testing.assert_allclose(float(to_numpy(x)), -0.6, atol=1e-5)


def test_weight_decay_only_on_kernels_and_respects_host_exclusions():
    k = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    k2 = keras.Variable(np.ones((3, 2), "float32"), name="kept")
    b = keras.Variable(np.ones((2,), "float32"), name="bias")
    host = keras.optimizers.AdamW(0.1, weight_decay=0.5)
    host.exclude_from_weight_decay(var_names=["kept"])
    opt = keras_sing.SING(host, lookahead=False)
    zero = [np.zeros((3, 2), "float32"), np.zeros((3, 2), "float32"), np.zeros((2,), "float32")]
    opt.apply(zero, [k, k2, b])
    np.testing.assert_allclose(to_numpy(k), 1 - 0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(k2), 1.0)
    np.testing.assert_allclose(to_numpy(b), 1.0)


def test_exclude_gets_the_raw_gradient():
    g = keras.Variable(np.ones((4,), "float32"), name="gamma")
    w = keras.Variable(np.ones((4,), "float32"), name="w")
    for rule in ["gamma", ["nothing", "gam+a"], lambda v: v.name == "gamma"]:
        g.assign(np.ones(4, "float32"))
        w.assign(np.ones(4, "float32"))
        opt = keras_sing.SING(keras.optimizers.SGD(0.1), exclude=rule, lookahead=False)
        grad = np.array([3.0, 4.0, 0.0, 0.0], "float32")
        opt.apply([grad, grad], [g, w])
        assert_close(g, 1 - 0.1 * grad)
        assert_close(w, 1 - 0.1 * grad / 5.0)


def test_centralize_axes_rules():
    """Default rule, dict rule (regex searched in the path), callable rule."""
    table = keras.Variable(np.zeros((5, 3), "float32"), name="embeddings")
    kernel = keras.Variable(np.zeros((4, 2, 3), "float32"), name="kernel")
    grad_t = np.random.standard_normal((5, 3)).astype("float32")
    grad_k = np.random.standard_normal((4, 2, 3)).astype("float32")

    def step(**kwargs):
        table.assign(np.zeros((5, 3), "float32"))
        kernel.assign(np.zeros((4, 2, 3), "float32"))
        opt = keras_sing.SING(keras.optimizers.SGD(1.0), lookahead=False, **kwargs)
        opt.apply([grad_t, grad_k], [table, kernel])
        return -to_numpy(table), -to_numpy(kernel)

    t, k = step()
    assert_close(t, reference.standardize(grad_t, (1,)))  # per row
    assert_close(k, reference.standardize(grad_k, (0, 1)))  # all but last
    t, k = step(centralize_axes={"kernel$": (0,), "embeddings": None})
    assert_close(t, reference.standardize(grad_t, ()))
    assert_close(k, reference.standardize(grad_k, (0,)))
    t, k = step(centralize_axes=lambda v: (-1,) if v.name == "kernel" else None)
    assert_close(t, reference.standardize(grad_t, ()))
    assert_close(k, reference.standardize(grad_k, (2,)))
    with pytest.raises(ValueError, match="centralize_axes"):
        step(centralize_axes={"kernel": (3,)})


def test_fan_in_axes_reads_einsum_and_embedding_layers():
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(20, 8, name="emb")(tokens)
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h)
    model = keras.Model(tokens, h)
    rules = keras_sing.fan_in_axes(model)
    opt = keras_sing.SING(keras.optimizers.SGD(), centralize_axes=rules)
    opt.build(model.trainable_variables)
    axes = {v.path: plan[1] for v, plan in zip(model.trainable_variables, opt._plans, strict=True)}
    assert axes["emb/embeddings"] == (1,)
    assert axes["mha/query/kernel"] == (0,)  # "abc,cde->abde": (dim, heads, head_dim)
    assert axes["mha/key/kernel"] == (0,)
    assert axes["mha/attention_output/kernel"] == (0, 1)  # (heads, head_dim, dim)
    assert axes["mha/query/bias"] is None  # (heads, head_dim): no fan-in
    assert axes["mha/attention_output/bias"] is None


def test_variables_without_gradients_are_left_alone():
    """A variable with no gradient at a step is not stepped: no weight
    decay, no momentum step, no moment update (it had a gradient before,
    so a wrong step would move it)."""
    rng = np.random.default_rng(0)
    a = keras.Variable(np.ones((3, 2), "float32"))
    b = keras.Variable(np.ones((3, 2), "float32"))
    host = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    opt = keras_sing.SING(host, lookahead_steps=5)
    opt.apply([rng.standard_normal((3, 2)).astype("float32") for _ in range(2)], [a, b])
    index = host._get_variable_index(b)

    def b_state():
        return [to_numpy(x) for x in (b, host._momentums[index], host._velocities[index])]

    after_its_step = b_state()
    assert not np.allclose(after_its_step[0], 1.0) and np.any(after_its_step[1] != 0)
    a_before = to_numpy(a)
    for _ in range(2):
        opt.apply([rng.standard_normal((3, 2)).astype("float32"), None], [a, b])
    for got, expected in zip(b_state(), after_its_step, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert not np.allclose(to_numpy(a), a_before)


def test_gradient_accumulation_standardizes_the_mean_gradient_once():
    """Host accumulating n=2 micro-batches = one step on the mean gradient,
    standardized once; LookAhead counts real updates (k=2 -> every 4 calls)."""
    init, grads = random_problem(steps=8)
    acc = keras_sing.SING(keras.optimizers.AdamW(1e-2, gradient_accumulation_steps=2), lookahead_steps=2)
    got = run(acc, init, grads)
    means = [[(a + b) / 2 for a, b in zip(grads[i], grads[i + 1], strict=True)] for i in range(0, 8, 2)]
    expected = run(keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2), init, means)
    for a, b in zip(got, expected, strict=True):
        assert_close(a, b, rtol=1e-5)
    assert int(to_numpy(acc.iterations)) == 4


@pytest.mark.skipif(not hasattr(keras.optimizers, "Muon"), reason="keras.optimizers.Muon needs Keras >= 3.12")
def test_muon_host_decays_its_adam_variables_with_adam_weight_decay():
    """Muon decays the variables it updates with AdamW (not 2-D) by
    `adam_weight_decay`, the others by `weight_decay`; in the identity
    configuration with `weight_decay_mode="host"`, SING(Muon) steps as Muon."""
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((2, 3, 4)).astype("float32"), rng.standard_normal((4, 3)).astype("float32")]

    def run(wrap):
        conv = keras.Variable(np.ones((2, 3, 4), "float32"), name="conv_kernel")
        dense = keras.Variable(np.ones((4, 3), "float32"), name="kernel")
        host = keras.optimizers.Muon(learning_rate=0.1, weight_decay=0.5, adam_weight_decay=0.2)
        opt = keras_sing.SING(host, centralize=False, normalize=False, lookahead=False, on_nonfinite="ignore", weight_decay_mode="host") if wrap else host
        for _ in range(2):
            opt.apply([keras.ops.convert_to_tensor(g) for g in grads], [conv, dense])
        return to_numpy(conv), to_numpy(dense)

    for got, want in zip(run(True), run(False), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
