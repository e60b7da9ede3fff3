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


def raise_if_false(condition, step, message):
    """Raises `message` (formatted with `step=`) when `condition` is false,
    from inside compiled code where the backend allows it.

    Eagerly and on torch (eager or `torch.compile`, which breaks the graph
    there): `FloatingPointError`, after reading the flag on the host (a
    device synchronization). `jax.jit`: a `jax.debug.callback` raises at run
    time, surfacing as a `JaxRuntimeError` that carries the message. A TF
    graph: `tf.debugging.Assert` (`InvalidArgumentError`); XLA drops
    assertions, so an XLA-compiled TF step raises a `ValueError` when traced.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow" and is_traced(condition):
        from keras_sing.backend import tensorflow as tf_backend

        tf_backend.assert_true(condition, step, message)
    elif backend == "jax" and is_traced(condition):
        import jax

        jax.debug.callback(_raise_if_false, condition, step, message)
    else:
        _raise_if_false(condition, step, message)


def _raise_if_false(condition, step, message):
    if not bool(condition):
        raise FloatingPointError(message.format(step=int(step)))
