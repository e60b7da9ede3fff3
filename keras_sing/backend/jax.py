"""JAX backend: SING's per-variable functions traced once per signature.

Under `jax.jit` every `keras.ops` call of the per-variable step is traced
again for each of a model's variables (~200 in a 12-block transformer),
though most share a shape: a ViT's 12 blocks have the same dozen shapes.
`traced_once_per_signature` wraps such a function in a nested `jax.jit`,
which traces it once per (shapes, dtypes, static hyper-parameters) and
reuses the traced program for every other variable of that signature. The
math is the function's own (the wrapper restates nothing), and XLA inlines
the nested calls: the compiled step is the same program, reached with a
fraction of the tracing and lowering.
"""

import functools

import jax
import keras


def traced_once_per_signature(fn, static_argnames):
    """`fn`, traced once per input signature when called under `jax.jit`.

    Called with traced values (inside `jax.jit`, as in `fit` or
    `jax.jit(optimizer.stateless_apply)`), it runs `fn` as a nested
    `jax.jit` whose `static_argnames` are the non-array arguments (Python
    numbers, axes, hyper-parameter tuples), passed by keyword. Called
    eagerly, or with an unhashable static argument, it calls `fn` as is.

    Args:
        fn: a pure function of tensors and hyper-parameters.
        static_argnames: the names of `fn`'s keyword arguments that are
            hyper-parameters (hashable Python values), not tensors.

    Returns:
        A function with `fn`'s signature and results.
    """
    static_argnames = tuple(static_argnames)
    jitted = jax.jit(fn, static_argnames=static_argnames)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        static = {k: v for k, v in kwargs.items() if k in static_argnames}
        dynamic = {k: v for k, v in kwargs.items() if k not in static_argnames}
        # keras Variables (their current value, StatelessScope included)
        # become arrays: jax.jit takes arrays, not objects that convert
        args, dynamic = jax.tree_util.tree_map(
            _value, (args, dynamic), is_leaf=lambda x: x is None
        )
        leaves = jax.tree_util.tree_leaves((args, dynamic))
        if not any(isinstance(x, jax.core.Tracer) for x in leaves):
            return fn(*args, **dynamic, **static)
        try:
            hash(tuple(static.items()))
        except TypeError:
            return fn(*args, **dynamic, **static)
        return jitted(*args, **dynamic, **static)

    return call


def _value(x):
    if isinstance(x, keras.Variable):
        return keras.ops.convert_to_tensor(x)
    return x
