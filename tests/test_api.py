"""Public surface, argument validation and config round-trips."""

import json
import re
import warnings

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_sing


def test_public_api_is_exactly_the_documented_set():
    assert set(keras_sing.__all__) == {
        "SING",
        "__version__",
        "callbacks",
        "datasets",
        "default_centralize_axes",
        "fan_in_axes",
    }
    for name in keras_sing.__all__:
        if name != "__version__":
            assert getattr(keras_sing, name).__doc__, name
    assert isinstance(keras_sing.__version__, str)
    assert keras_sing.callbacks.GradientNormMonitor.__doc__
    assert keras_sing.datasets.rde.generate.__doc__


def test_sing_is_a_registered_keras_optimizer():
    opt = keras_sing.SING()
    assert isinstance(opt, keras.optimizers.Optimizer)
    assert keras.saving.get_registered_name(keras_sing.SING) == "keras_sing>SING"


def test_default_host_is_the_papers():
    host = keras_sing.SING().inner_optimizer
    assert isinstance(host, keras.optimizers.AdamW)
    assert float(keras.ops.convert_to_numpy(host.learning_rate)) == pytest.approx(5e-3)
    assert host.weight_decay == 0.0
    assert (host.beta_1, host.beta_2) == (0.9, 0.999)


@pytest.mark.parametrize(
    "identifier, cls",
    [("adamw", keras.optimizers.AdamW), ("sgd", keras.optimizers.SGD), ("lion", keras.optimizers.Lion), ("adam", keras.optimizers.Adam)],
)
def test_identifier_hosts(identifier, cls):
    opt = keras_sing.SING(identifier)
    assert isinstance(opt.inner_optimizer, cls)
    # softplus follows the host: on for Adam-family, off otherwise.
    assert opt._softplus == isinstance(opt.inner_optimizer, keras.optimizers.Adam)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(optimizer=3), TypeError, "optimizer"),
        (dict(optimizer=object()), TypeError, "optimizer"),
        (dict(optimizer="not_an_optimizer"), ValueError, "optimizer"),
        (dict(epsilon=0.0), ValueError, "epsilon"),
        (dict(epsilon=-1e-8), ValueError, "epsilon"),
        (dict(softplus_beta=0), ValueError, "softplus_beta"),
        (dict(lookahead_steps=0), ValueError, "lookahead_steps"),
        (dict(lookahead_steps=2.5), ValueError, "lookahead_steps"),
        (dict(lookahead_alpha=0.0), ValueError, "lookahead_alpha"),
        (dict(lookahead_alpha=1.5), ValueError, "lookahead_alpha"),
        (dict(softplus="yes"), ValueError, "softplus"),
        (dict(optimizer="sgd", softplus=True), ValueError, "Adam"),
        (dict(optimizer="lion", softplus=True), ValueError, "softplus=True"),
        (dict(learning_rate=0.1), ValueError, "host"),
        (dict(gradient_accumulation_steps=2), ValueError, "host"),
        (dict(centralize_axes=3), TypeError, "centralize_axes"),
        (dict(exclude=3), TypeError, "exclude"),
        (dict(unknown_argument=1), TypeError, "unexpected"),
        # truthy strings would silently keep an option on
        (dict(centralize="False"), TypeError, "centralize.*True or False"),
        (dict(normalize=0), TypeError, "normalize.*True or False"),
        (dict(lookahead="no"), TypeError, "lookahead.*True or False"),
        # infinities pass "> 0" and then give NaN weights or no update
        (dict(epsilon=float("inf")), ValueError, "epsilon.*finite"),
        (dict(softplus_beta=float("inf")), ValueError, "softplus_beta.*finite"),
        (dict(softplus_beta=float("nan")), ValueError, "softplus_beta"),
        (dict(lookahead_alpha=True), ValueError, "lookahead_alpha"),
        # axes that are not ints, checked before the first step
        (dict(centralize_axes={"kernel": "all"}), TypeError, "centralize_axes.*tuple of ints"),
        (dict(centralize_axes={"kernel": (0, 0.5)}), TypeError, "centralize_axes.*tuple of ints"),
        (dict(centralize_axes={1: (0,)}), TypeError, "centralize_axes.*regex strings"),
        (dict(centralize_axes=[(0,)]), TypeError, "centralize_axes.*dict"),
        # `exclude` lists hold regex strings (saved with the model)
        (dict(exclude=[re.compile("bias")]), TypeError, "exclude.*regex strings"),
        (dict(exclude=["bias", 3]), TypeError, "exclude.*regex strings"),
        (dict(exclude=["["]), ValueError, "exclude.*invalid regex.*re.escape"),
        (dict(centralize_axes={"[": (0,)}), ValueError, "centralize_axes.*invalid regex"),
        (dict(optimizer={}), ValueError, "optimizer.*could not be interpreted"),
        # the cause, not only "could not be interpreted"
        (dict(optimizer={"class_name": "AdamW", "config": {"learning_rat": 1}}), ValueError,
         "could not be interpreted.*learning_rat"),
        # compared with the int32 step counter
        (dict(lookahead_steps=2**31), ValueError, "lookahead_steps.*2\\*\\*31 - 1"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        keras_sing.SING(**kwargs)


def test_numpy_scalars_are_accepted_as_numbers():
    opt = keras_sing.SING(
        lookahead_steps=np.int64(3), lookahead_alpha=np.float32(0.25),
        epsilon=np.float64(1e-6), softplus_beta=np.float32(20.0),
        centralize=np.bool_(True), centralize_axes={"kernel": np.int32(0)},
        softplus=np.bool_(False),
    )
    assert (opt.lookahead_steps, opt.lookahead_alpha, opt.epsilon, opt.softplus_beta) == (3, 0.25, 1e-6, 20.0)
    assert type(opt.lookahead_steps) is int and opt.centralize is True and opt.softplus is False
    config = json.loads(json.dumps(opt.get_config()))  # JSON-clean, as saved
    assert keras_sing.SING.from_config(config).lookahead_steps == 3


def test_int_axes_in_a_dict_survive_the_config():
    opt = keras_sing.SING(centralize_axes={"kernel": 0, "bias": None, "other": [0, 1]})
    restored = keras_sing.SING.from_config(opt.get_config())
    assert restored.centralize_axes == {"kernel": 0, "bias": None, "other": (0, 1)}
    kernel = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    restored.build([kernel])
    assert restored._plans[0][1] == (0,)


def test_bad_hosts():
    with pytest.raises(ValueError, match="SING"):
        keras_sing.SING(keras_sing.SING())
    with pytest.raises(ValueError, match="LossScaleOptimizer\\(SING"):
        keras_sing.SING(keras.optimizers.LossScaleOptimizer(keras.optimizers.AdamW()))
    host = keras.optimizers.AdamW()
    keras_sing.SING(host)
    with pytest.raises(ValueError, match="another SING"):
        keras_sing.SING(host)
    # a MultiOptimizer applies its optimizers' own steps: SING around it
    # trained as the bare MultiOptimizer
    multi = getattr(keras.optimizers, "MultiOptimizer", None)
    if multi is not None:
        inner = multi(keras.optimizers.OptimizerMap(keras.optimizers.SGD(0.1)))
        with pytest.raises(ValueError, match="MultiOptimizer.*OptimizerMap\\(SING"):
            keras_sing.SING(inner)


def test_the_host_cannot_be_replaced():
    """A host assigned after construction was never taken over: SING then
    trained as that host alone. It is refused, and SING keeps its own."""
    host = keras.optimizers.SGD(1.0)
    opt = keras_sing.SING(host, lookahead=False)
    with pytest.raises(AttributeError, match="Create a new SING"):
        opt.inner_optimizer = keras.optimizers.SGD(1.0)
    assert opt.inner_optimizer is host
    kernel = keras.Variable(np.zeros((3, 2), "float32"), name="kernel")
    opt.apply([np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]], "float32")], [kernel])
    # SGD(1) on the standardized gradient: a unit-norm step
    np.testing.assert_allclose(np.linalg.norm(to_numpy(kernel)), 1.0, rtol=1e-5)


def test_gradients_as_nested_lists_step_as_arrays_and_a_scalar_is_refused():
    """A nested list is a gradient as the host takes it (on TF and JAX);
    a scalar for a (3, 2) variable is refused with the shapes named (the
    host would broadcast it; SING would take a mean over a missing axis)."""
    grad = [[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]]
    values = []
    for g in (grad, np.array(grad, "float32")):
        kernel = keras.Variable(np.zeros((3, 2), "float32"), name="kernel")
        keras_sing.SING(keras.optimizers.SGD(1.0)).apply([g], [kernel])
        values.append(to_numpy(kernel))
    np.testing.assert_array_equal(values[0], values[1])
    assert np.any(values[0] != 0)
    kernel = keras.Variable(np.zeros((3, 2), "float32"), name="kernel")
    opt = keras_sing.SING(keras.optimizers.SGD(1.0))
    with pytest.raises(ValueError, match=r"gradient of shape \(\) for variable 'kernel' of shape \(3, 2\)"):
        opt.apply([np.float32(1.0)], [kernel])
    np.testing.assert_array_equal(to_numpy(kernel), 0.0)


@keras.saving.register_keras_serializable(package="tests")
def is_norm_scale(variable):
    return variable.name == "gamma"


def non_default_sing():
    host = keras.optimizers.AdamW(
        learning_rate=keras.optimizers.schedules.CosineDecay(1e-2, 100, warmup_target=2e-2, warmup_steps=5),
        weight_decay=1e-3,
        beta_1=0.8,
        clipnorm=1.0,
    )
    return keras_sing.SING(
        host,
        centralize=False,
        normalize=True,
        epsilon=1e-6,
        softplus=False,
        softplus_beta=20.0,
        lookahead=True,
        lookahead_steps=3,
        lookahead_alpha=0.7,
        centralize_axes={"query/kernel": (0,), "bias": None},
        exclude=is_norm_scale,
        name="my_sing",
    )


def test_config_round_trip():
    opt = non_default_sing()
    config = opt.get_config()
    json.dumps(config)  # JSON-serializable
    clone = keras_sing.SING.from_config(config)
    assert clone.get_config() == config
    assert clone.exclude is is_norm_scale
    assert clone.centralize_axes == {"query/kernel": (0,), "bias": None}
    assert isinstance(clone.inner_optimizer, keras.optimizers.AdamW)
    assert clone.inner_optimizer.clipnorm == 1.0


def test_serialize_deserialize_round_trip():
    opt = non_default_sing()
    config = keras.optimizers.serialize(opt)
    clone = keras.optimizers.deserialize(json.loads(json.dumps(config)))
    assert isinstance(clone, keras_sing.SING)
    assert keras.optimizers.serialize(clone) == config


HOST_CLASSES = sorted(
    name
    for name, value in vars(keras.optimizers).items()
    if isinstance(value, type)
    and issubclass(value, keras.optimizers.Optimizer)
    and name not in ("Optimizer", "LossScaleOptimizer", "MultiOptimizer")
)


@pytest.mark.parametrize("name", HOST_CLASSES)
def test_every_keras_optimizer_round_trips_as_a_host(name):
    """`keras.optimizers.deserialize`'s table misses some of Keras's own
    optimizers (Lamb: a saved `SING(Lamb())` model did not load); the host
    loads by class name from all of `keras.optimizers`."""
    host_class = getattr(keras.optimizers, name)
    opt = keras_sing.SING(host_class(learning_rate=0.0123))
    clone = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(opt))))
    assert isinstance(clone, keras_sing.SING) and isinstance(clone.inner_optimizer, host_class)
    assert clone.inner_optimizer.get_config() == opt.inner_optimizer.get_config()


def test_a_hand_written_host_config_loads():
    for host in ({"class_name": "SGD", "config": {"learning_rate": 0.1}}, "sgd"):
        opt = keras.optimizers.get({"class_name": "keras_sing>SING", "config": {"optimizer": host}})
        assert isinstance(opt.inner_optimizer, keras.optimizers.SGD)
    assert float(opt.inner_optimizer.learning_rate) == pytest.approx(0.01)  # "sgd": Keras's default
    assert float(keras_sing.SING.from_config({"optimizer": {"class_name": "SGD", "config": {"learning_rate": 0.1}}})
                 .inner_optimizer.learning_rate) == pytest.approx(0.1)


def test_a_config_without_a_host_gets_the_default_host():
    for identifier in ({"class_name": "keras_sing>SING", "config": {"lookahead_steps": 6}}, "keras_sing>SING"):
        opt = keras.optimizers.get(identifier)
        assert isinstance(opt, keras_sing.SING) and isinstance(opt.inner_optimizer, keras.optimizers.AdamW)
    assert opt.lookahead_steps == 5
    assert keras.optimizers.get({"class_name": "keras_sing>SING", "config": {"lookahead_steps": 6}}).lookahead_steps == 6


@pytest.mark.parametrize("stateless", [False, True])
def test_a_gradient_list_of_another_length_names_the_fix(stateless):
    kernel = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    bias = keras.Variable(np.zeros((2,), "float32"), name="bias")
    opt = keras_sing.SING(keras.optimizers.SGD(0.1))
    opt.build([kernel, bias])
    grad = keras.ops.ones((3, 2))
    with pytest.raises(ValueError, match="received 1 gradients for 2 variables. Pass one gradient"):
        if stateless:
            opt.stateless_apply([v.value for v in opt.variables], [grad], [kernel.value, bias.value])
        else:
            opt.apply([grad], [kernel, bias])
    with pytest.raises(ValueError, match="received 1 gradients for 2 variables"):
        opt.apply([grad])  # the variables SING was built with


def test_regex_exclude_round_trips():
    opt = keras_sing.SING("sgd", exclude=["layer_norm", "gamma$"])
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert clone.exclude == ["layer_norm", "gamma$"]


def test_variables_are_host_then_own():
    opt = keras_sing.SING()
    v = [keras.Variable(np.zeros((3, 2), "float32")), keras.Variable(np.zeros((2,), "float32"))]
    opt.build(v)
    names = [x.name for x in opt.variables]
    assert "lookahead_slow" in " ".join(names)
    host = opt.inner_optimizer.variables
    ids = [id(x) for x in opt.variables]
    assert ids[: len(host)] == [id(h) for h in host]
    # SING's own: 2 slow weights, 2 gradient norms, skipped_steps; not the
    # base class's unused `iteration` and `learning_rate`
    own = names[len(host):]
    assert [n.endswith("lookahead_slow") for n in own] == [True] * 2 + [False] * 3
    assert own[2:] == [f"{v[0].name}_gradient_norm", f"{v[1].name}_gradient_norm", "skipped_steps"]


@pytest.mark.parametrize(
    "kwargs, warned",
    [
        (dict(exclude=r"layer_norm"), "`exclude` regexes ['layer_norm']"),
        (dict(exclude=["dense_1/", "ln_1"]), "`exclude` regexes ['ln_1']"),
        (dict(centralize_axes={"kernal": (0,), "dense_1/kernel": None}), "`centralize_axes` regexes ['kernal']"),
        (dict(exclude="bias$", centralize_axes={"kernel": (0,)}), None),
        (dict(exclude=lambda v: False), None),
    ],
)
def test_regexes_that_select_no_variable_warn_once_at_build(kwargs, warned):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="dense_0"), keras.layers.Dense(2, name="dense_1")])
    opt = keras_sing.SING(keras.optimizers.SGD(0.1), **kwargs)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        opt.build(model.trainable_variables)
    unmatched = [str(w.message) for w in record if "found in none of" in str(w.message)]
    if warned is None:
        assert unmatched == []
        return
    assert len(unmatched) == 1 and warned in unmatched[0]
    assert "dense_0/kernel" in unmatched[0] and "exclude_regex(layer_path)" in unmatched[0]
    # the regexes that match still apply
    standardized = {v.path.split("/", 1)[1]: plan[0] for v, plan in zip(model.trainable_variables, opt._plans, strict=True)}
    assert standardized["dense_1/kernel"] is ("exclude" not in kwargs or kwargs["exclude"] == r"layer_norm")
    assert standardized["dense_0/kernel"]


class _SignAdam(keras.optimizers.Adam):
    """An Adam subclass with a step of its own."""

    def update_step(self, gradient, variable, learning_rate):
        variable.assign(variable - keras.ops.cast(learning_rate, variable.dtype) * keras.ops.sign(gradient))


def test_adam_subclass_with_its_own_step_keeps_it():
    """SING replaces the update of Keras's own Adam/AdamW by the published
    step; a subclass that overrides `update_step` keeps its own (identity
    config: SING's options off), and `softplus=True` refuses it."""
    grads = [keras.ops.convert_to_tensor(np.random.standard_normal((3, 2)).astype("float32")) for _ in range(3)]

    def run(wrap):
        w = keras.Variable(np.ones((3, 2), "float32"), name="w")
        opt = _SignAdam(0.1)
        if wrap:
            opt = keras_sing.SING(opt, centralize=False, normalize=False, lookahead=False, on_nonfinite="ignore", weight_decay_mode="host")
        for g in grads:
            opt.apply_gradients([(g, w)])
        return keras.ops.convert_to_numpy(w)

    expected = 1.0 - 0.1 * sum(np.sign(keras.ops.convert_to_numpy(g)) for g in grads)
    np.testing.assert_allclose(run(wrap=False), expected, rtol=1e-6)
    np.testing.assert_array_equal(run(wrap=True), run(wrap=False))
    with pytest.raises(ValueError, match="overrides `update_step`"):
        keras_sing.SING(_SignAdam(0.1), softplus=True)


def test_a_host_applied_on_its_own_says_it_belongs_to_a_sing():
    host = keras.optimizers.SGD(1.0)
    keras_sing.SING(host)
    kernel = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    with pytest.raises(RuntimeError, match="host of a SING optimizer.*sing.apply_gradients"):
        host.apply_gradients([(keras.ops.ones((3, 2)), kernel)])


def test_a_host_applied_on_its_own_after_sing_is_built_raises_and_changes_nothing():
    """Once SING has stepped, the host's own `apply_gradients` would run
    SING's step without SING's skip: it raises, naming the fix, and no
    variable moves. The SING goes on stepping."""
    host = keras.optimizers.AdamW(0.1)
    opt = keras_sing.SING(host)
    kernel = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    grad = keras.ops.convert_to_tensor(np.arange(6.0, dtype="float32").reshape(3, 2))
    opt.apply_gradients([(grad, kernel)])
    before = [keras.ops.convert_to_numpy(v) for v in [kernel, *opt.variables]]
    with pytest.raises(RuntimeError, match="host of a SING optimizer.*sing.apply_gradients"):
        host.apply_gradients([(grad, kernel)])
    after = [keras.ops.convert_to_numpy(v) for v in [kernel, *opt.variables]]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    opt.apply_gradients([(grad, kernel)])
    assert int(opt.iterations) == 2


def _int_and_float_step(make_opt, jit):
    """One step on an int32 and a float32 variable, with an int gradient for
    the int one: `(int values, float values)`, or the exception raised."""
    count = keras.Variable(np.ones((3, 2), "int32"), dtype="int32", name="count")
    kernel = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    grads = [np.full((3, 2), 2, "int32"), np.arange(6.0, dtype="float32").reshape(3, 2)]
    opt = make_opt()
    opt.build([count, kernel])
    try:
        if jit:
            import jax

            new, _ = jax.jit(opt.stateless_apply)([v.value for v in opt.variables], grads, [count.value, kernel.value])
            return [np.asarray(x) for x in new]
        opt.apply(grads, [count, kernel])
    except Exception as error:  # the host's own error, compared below
        return type(error), str(error).splitlines()[0]
    return [keras.ops.convert_to_numpy(v) for v in (count, kernel)]


@pytest.mark.parametrize("jit", [False, True] if keras.backend.backend() == "jax" else [False])
@pytest.mark.parametrize(
    "make_host",
    [
        lambda: keras.optimizers.AdamW(0.1),
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        # plain SGD moves an int variable on JAX (1 - 1.0 * 2 = -1): a SING
        # that left it alone would differ
        lambda: keras.optimizers.SGD(1.0),
    ],
    ids=["adamw", "sgd_momentum", "sgd"],
)
def test_a_trainable_int_variable_gets_the_hosts_own_step(make_host, jit):
    """SING has no statistics, slow copy or norm for a non-float variable:
    the host's own step updates it (on JAX, Keras's Adam leaves an int
    variable as it is; on TF it raises, and SING raises the same error),
    and SING's step of the other variables is unchanged."""
    if keras.backend.backend() == "torch":
        pytest.skip("torch: only floating-point tensors can require gradients (an int variable cannot be trainable)")
    host = _int_and_float_step(make_host, jit)
    sing = _int_and_float_step(lambda: keras_sing.SING(make_host()), jit)
    if isinstance(host, tuple):  # the host raised: SING raises the same
        assert sing == host
        return
    np.testing.assert_array_equal(sing[0], host[0])
    kernel = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    alone = keras_sing.SING(make_host())
    alone.apply([np.arange(6.0, dtype="float32").reshape(3, 2)], [kernel])
    np.testing.assert_array_equal(sing[1], keras.ops.convert_to_numpy(kernel))


class _EmptyKernel(keras.layers.Layer):
    """A layer with a `(0, 3)` weight (a `Dense` on an empty feature
    group), which contributes nothing."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(0, 3), initializer="ones", name="w")

    def call(self, x):
        empty = keras.ops.zeros((keras.ops.shape(x)[0], 0))
        return x + keras.ops.matmul(empty, self.w)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize(
    "make_host",
    [lambda: keras.optimizers.SGD(0.1), lambda: keras.optimizers.AdamW(0.1)],
    ids=["sgd", "adamw"],
)
def test_an_empty_variable_gets_the_hosts_own_step(make_host, jit_compile):
    """A variable with no elements has nothing to standardize: SING leaves
    it to the host (on TensorFlow its step failed where the plain host's
    trains), and steps the other variables as on the model without it."""
    def trained(with_empty):
        keras.utils.set_random_seed(0)
        layers = [keras.Input((4,)), keras.layers.Dense(3)]
        model = keras.Sequential(layers + [_EmptyKernel()] * with_empty)
        model.compile(keras_sing.SING(make_host()), "mse", jit_compile=jit_compile)
        x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
        model.fit(x, x[:, :3], batch_size=8, epochs=2, verbose=0, shuffle=False)
        assert int(keras.ops.convert_to_numpy(model.optimizer.skipped_steps)) == 0
        return [keras.ops.convert_to_numpy(w) for w in model.layers[0].weights]

    for a, b in zip(trained(True), trained(False), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
