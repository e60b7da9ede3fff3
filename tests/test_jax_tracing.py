"""On JAX, SING's per-variable functions are traced once per signature.

Inside `jax.jit` (`fit`, or `jax.jit(opt.stateless_apply)`), the step of
each variable used to be traced anew: ~200 traces of the same `keras.ops`
calls for a 12-block transformer whose variables have a dozen shapes.
`keras_sing.backend.traced_once_per_signature` runs `sing_adam_step` and
`standardization_statistics` as nested `jax.jit`s, traced once per (shapes,
dtypes, hyper-parameters). These tests check the wrapper itself, that the
optimizer's step traces each signature once, and that the values are the
generic path's, bit for bit.
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import random_gradients
from conftest import random_variables

import keras_sing
from keras_sing import _host
from keras_sing import backend as backend_lib
from keras_sing import transforms

jax_only = pytest.mark.skipif(
    BACKEND != "jax",
    reason="jax.jit's trace cache is JAX's; TF and torch call the function as is",
)

SHAPES = [(4, 3), (4, 3), (4, 3), (3,), (3,), (2, 3, 3, 4)]


@pytest.mark.skipif(BACKEND == "jax", reason="JAX gets the nested jit")
def test_other_backends_get_the_function_itself():
    def fn(x, *, factor):
        return x * factor

    assert backend_lib.traced_once_per_signature(fn, ("factor",)) is fn


def counting(fn, traces):
    def counted(*args, **kwargs):
        traces.append(tuple(args[0].shape))
        return fn(*args, **kwargs)

    return counted


def scaled(x, *, factor):
    return keras.ops.multiply(x, factor)


@jax_only
def test_traced_once_per_signature_under_jit():
    import jax

    traces = []
    wrapped = backend_lib.traced_once_per_signature(
        counting(scaled, traces), ("factor",)
    )

    @jax.jit
    def many(xs):
        return [wrapped(x, factor=2.0) for x in xs] + [wrapped(xs[0], factor=3.0)]

    xs = [np.full(s, i + 1.0, "float32") for i, s in enumerate(SHAPES)]
    out = many(xs)
    # one trace per (shape, factor): (4, 3), (3,), (2, 3, 3, 4), then factor 3
    assert traces == [(4, 3), (3,), (2, 3, 3, 4), (4, 3)]
    # factor 2 for each x, then factor 3 for the first one
    for x, y in zip(xs, out[:-1], strict=True):
        np.testing.assert_array_equal(np.asarray(y), 2 * x)
    np.testing.assert_array_equal(np.asarray(out[-1]), 3 * xs[0])


@jax_only
def test_eager_calls_and_unhashable_settings_run_the_function_as_is():
    import jax

    traces = []

    def scaled_by_list(x, *, factors):
        traces.append(tuple(x.shape))
        return keras.ops.multiply(x, factors[0])

    wrapped = backend_lib.traced_once_per_signature(scaled_by_list, ("factors",))
    x = np.ones((4, 3), "float32")
    # eagerly: no jit, the function runs at each call
    for _ in range(2):
        np.testing.assert_array_equal(np.asarray(wrapped(x, factors=[2.0])), 2 * x)
    assert traces == [(4, 3), (4, 3)]
    # a list cannot be a static argument: traced inline, once per call
    out = jax.jit(lambda a: [wrapped(a, factors=[2.0]) for _ in range(3)])(x)
    assert len(traces) == 5
    np.testing.assert_array_equal(np.asarray(out[0]), 2 * x)


@jax_only
def test_variables_are_passed_as_their_current_values():
    import jax

    wrapped = backend_lib.traced_once_per_signature(scaled, ("factor",))
    variable = keras.Variable(np.ones((4, 3), "float32"))

    @jax.jit
    def step(value):
        with keras.StatelessScope(state_mapping=[(variable, value)]):
            return wrapped(variable, factor=2.0)

    np.testing.assert_array_equal(
        np.asarray(step(np.full((4, 3), 5.0, "float32"))),
        np.full((4, 3), 10.0, "float32"),
    )


def make_variables():
    return random_variables(SHAPES)


def gradients(step):
    return random_gradients(SHAPES, step)


def run_steps(opt, variables, steps, nan_at=None):
    import jax

    opt.build(variables)
    optimizer_values = [v.value for v in opt.variables]
    values = [v.value for v in variables]
    step = jax.jit(opt.stateless_apply)
    for i in range(steps):
        grads = gradients(i)
        if i == nan_at:
            grads[1][0, 0] = np.nan
        values, optimizer_values = step(optimizer_values, grads, values)
    return [np.asarray(x) for x in list(values) + list(optimizer_values)]


@jax_only
def test_the_step_traces_each_signature_once(monkeypatch):
    adam_traces, statistics_traces = [], []
    monkeypatch.setattr(
        _host,
        "_sing_adam_step",
        backend_lib.traced_once_per_signature(
            counting(transforms.sing_adam_step, adam_traces), ("hyper",)
        ),
    )
    monkeypatch.setattr(
        _host,
        "_standardization_statistics",
        backend_lib.traced_once_per_signature(
            counting(transforms.standardization_statistics, statistics_traces),
            ("axes", "centralize_"),
        ),
    )
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2)
    run_steps(opt, make_variables(), 2)
    # six variables, three signatures (shape and hyper-parameters)
    assert sorted(adam_traces) == [(2, 3, 3, 4), (3,), (4, 3)]
    assert sorted(statistics_traces) == [(2, 3, 3, 4), (3,), (4, 3)]


@jax_only
@pytest.mark.parametrize(
    "settings",
    [
        dict(lookahead_steps=2),
        dict(lookahead=False, softplus=False),
        dict(host_amsgrad=True, nan_at=2),
        dict(host_accumulation=2),
    ],
    ids=["lookahead", "plain", "amsgrad_nan", "accumulation"],
)
def test_same_values_as_the_generic_path(monkeypatch, settings):
    """Bit for bit what the functions give traced inline, per variable."""
    settings = dict(settings)
    nan_at = settings.pop("nan_at", None)
    amsgrad = settings.pop("host_amsgrad", False)
    accumulation = settings.pop("host_accumulation", None)

    def run():
        host = keras.optimizers.AdamW(
            1e-2, amsgrad=amsgrad, gradient_accumulation_steps=accumulation
        )
        opt = keras_sing.SING(host, **settings)
        return run_steps(opt, make_variables(), 5, nan_at=nan_at)

    nested = run()
    monkeypatch.setattr(_host, "_sing_adam_step", transforms.sing_adam_step)
    monkeypatch.setattr(
        _host, "_standardization_statistics", transforms.standardization_statistics
    )
    inline = run()
    assert len(nested) == len(inline)
    for a, b in zip(nested, inline, strict=True):
        np.testing.assert_array_equal(a, b)
