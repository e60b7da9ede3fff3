"""Backend-specific pieces of keras_sing, each imported only on its backend.

The bottom of keras_sing's imports: this package imports nothing of
keras_sing. Its functions take tensors, callables and hyper-parameters,
never the optimizer. What `keras.ops` cannot say lives here: control flow
that is cheap both eagerly and compiled, sparse gradients, and one module
per backend (`tensorflow`: tf.distribute and graph assertions; `torch`: the
batched `_foreach` step; `jax`: the per-variable step traced once per
signature), each tested against the generic path.
"""

import contextlib

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


def state_creation_scope():
    """Where the optimizer creates its state at the first step: outside the
    TF graph being traced (`tf.init_scope`), unless a tf.distribute
    strategy is in scope. Created inside a `tf.function`, each variable
    gets a lifted initializer and the function is traced a second time;
    created eagerly, the step is traced once. Elsewhere a no-op."""
    if keras.backend.backend() == "tensorflow":
        from keras_sing.backend import tensorflow as tf_backend

        return tf_backend.state_creation_scope()
    return contextlib.nullcontext()


def traced_once_per_signature(fn, static_argnames):
    """`fn`, traced once per input signature under `jax.jit` (a nested
    `jax.jit`; see `keras_sing.backend.jax`), so that a model's many
    variables of one shape share one trace. `static_argnames` name `fn`'s
    hyper-parameter arguments, passed by keyword. On TensorFlow and torch
    it is `fn` itself."""
    if keras.backend.backend() != "jax":
        return fn
    from keras_sing.backend import jax as jax_backend

    return jax_backend.traced_once_per_signature(fn, static_argnames)


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


def is_sparse(gradient):
    """Whether `gradient` is a sparse tensor (TF `IndexedSlices`, JAX
    `BCOO`)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_sing.backend import tensorflow as tf_backend

        return tf_backend.is_sparse(gradient)
    if backend == "jax":
        from jax.experimental import sparse

        return isinstance(gradient, sparse.JAXSparse)
    return False


def densify(gradient):
    """`gradient` as a dense tensor: standardization needs the whole
    tensor (its norm, and means across rows)."""
    if not is_sparse(gradient):
        return gradient
    if keras.backend.backend() == "tensorflow":
        from keras_sing.backend import tensorflow as tf_backend

        return tf_backend.densify(gradient)
    return gradient.todense()


def values_of(gradient):
    """The stored values of a sparse gradient (all a finiteness check
    needs), or the gradient."""
    if not is_sparse(gradient):
        return gradient
    return gradient.values if keras.backend.backend() == "tensorflow" else (
        gradient.data
    )
