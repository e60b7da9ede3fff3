"""Backend-specific pieces of keras_sing, each imported only on its backend.

The core (`keras_sing.sing`, `keras_sing.transforms`) uses `keras.ops` only;
what cannot be said that way lives here, one module per backend, and is
tested against the generic path.
"""

import keras
from keras import ops


def is_traced(x):
    """Whether `x` is a symbolic value being traced (jax.jit, tf.function),
    as opposed to a concrete eager tensor."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    return False


def cond(pred, true_fn, false_fn):
    """`ops.cond`, or a plain Python branch when `pred` is concrete.

    Under tracing it is `ops.cond` (compiled code runs one branch). Eagerly,
    JAX's `lax.cond` would re-trace and re-compile fresh lambdas at every
    call; a Python `if` on the concrete value runs only the branch taken.
    """
    if is_traced(pred):
        return ops.cond(pred, true_fn, false_fn)
    return true_fn() if bool(pred) else false_fn()
