"""TensorFlow traces SING's first compiled step once.

`tf.function` records every variable created during its first trace, gives
each a lifted initializer, and traces the function a second time. Keras
builds an optimizer inside the first traced train step (when no strategy
is set), so a host built there costs two traces of the whole step. SING
creates its state (and its host's) eagerly instead
(`keras_sing.backend.state_creation_scope`): one trace, and the same
variables, values and paths as a SING built eagerly.
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import random_gradients
from conftest import random_variables
from conftest import to_numpy

import keras_sing
from keras_sing import backend as backend_lib

pytestmark = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="tf.function's variable lifting and retracing are TensorFlow's",
)

SHAPES = [(4, 3), (3,), (3, 3, 2, 4)]


def make_variables():
    return random_variables(SHAPES)


def gradients(step):
    return random_gradients(SHAPES, step)


def traced_steps(opt, variables, steps, jit_compile=False):
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile)
    def step(grads):
        opt.apply(grads, variables)

    for i in range(steps):
        step([tf.constant(g) for g in gradients(i)])
    return step.experimental_get_tracing_count()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_sing_built_in_the_first_trace_is_traced_once(jit_compile):
    variables = make_variables()
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2)
    assert traced_steps(opt, variables, 3, jit_compile) == 1


def test_the_tracing_count_sees_state_created_in_the_trace(monkeypatch):
    """The guard can fail: with the state created inside the trace (the
    scope a no-op), the same step is traced twice."""
    import contextlib

    monkeypatch.setattr(
        backend_lib, "state_creation_scope", contextlib.nullcontext
    )
    variables = make_variables()
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2)
    assert traced_steps(opt, variables, 3) == 2


def test_built_in_a_trace_equals_built_eagerly():
    """Same variables (paths, count, values), the same trajectory, bit for
    bit."""
    eager_vars = make_variables()
    eager = keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2)
    eager.build(eager_vars)
    traced_steps(eager, eager_vars, 4)

    keras.utils.clear_session()  # the same auto-numbered names again
    traced_vars = make_variables()
    traced = keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead_steps=2)
    traced_steps(traced, traced_vars, 4)

    assert [v.path for v in traced.variables] == [v.path for v in eager.variables]
    for a, b in zip(traced.variables + traced_vars, eager.variables + eager_vars, strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_fit_traces_the_train_step_once():
    """Through `model.fit(jit_compile=True)`: the host's update
    (`_backend_update_step`, SING's step inside the host's `apply`), which
    runs once per trace, is traced once over three steps."""
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(2)]
    )
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2))
    host = opt.inner_optimizer
    calls = []
    host_update = host._backend_update_step

    def counting_update(*args, **kwargs):
        calls.append(1)
        return host_update(*args, **kwargs)

    host._backend_update_step = counting_update
    model.compile(opt, "mse", jit_compile=True)
    x = np.random.default_rng(0).standard_normal((12, 6)).astype("float32")
    y = np.zeros((12, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(opt.iterations) == 3
    assert len(calls) == 1
