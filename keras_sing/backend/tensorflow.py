"""TensorFlow backend: sparse gradients, tf.distribute, graph assertions."""

import contextlib

import tensorflow as tf


def is_sparse(gradient):
    return isinstance(gradient, tf.IndexedSlices)


def densify(gradient):
    """`gradient` as a dense tensor (IndexedSlices summed into place)."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(gradient)
    return gradient


def assert_true(condition, step, message):
    """`tf.debugging.Assert(condition)` in a graph; a clear error when the
    graph is XLA-compiled, where TF drops assertions without a word."""
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.ops import control_flow_util

    if control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph()):
        raise ValueError(
            "SING(on_nonfinite='raise') cannot raise inside an XLA-compiled "
            "TensorFlow step (XLA drops assertions). Compile with "
            "`model.compile(..., jit_compile=False)`, or use "
            "on_nonfinite='skip' and watch `optimizer.skipped_steps`."
        )
    tf.debugging.Assert(
        condition, [message.format(step="<step>"), "step:", step]
    )


@contextlib.contextmanager
def state_creation_scope():
    """Creates variables eagerly, outside the `tf.function` being traced,
    unless a tf.distribute strategy is in scope (whose variables are
    created its own way).

    `tf.function` records every variable created in its first trace, gives
    each a lifted initializer, and traces the function a second time. The
    optimizer's state made here, under `tf.init_scope`, with lifting off,
    is plain eager state: the step is traced once.
    """
    if tf.distribute.has_strategy() or tf.executing_eagerly():
        yield
        return

    def eager_creator(next_creator, **kwargs):
        kwargs["experimental_enable_variable_lifting"] = False
        return next_creator(**kwargs)

    with tf.init_scope(), tf.variable_creator_scope(eager_creator):
        yield


def has_strategy():
    """Whether a (non-default) tf.distribute strategy is in scope."""
    return tf.distribute.has_strategy()


def copy_on_every_device(distribution, pred, targets, sources):
    """`targets[i] <- sources[i]` on every device, if the scalar `pred`.

    In cross-replica context: each copy goes through the strategy's
    `update`, which pairs each device's copy of `targets[i]` with that
    device's copy of `sources[i]`; one `cond` for all of them."""

    def copy(target, source):
        return target.assign(tf.cast(source, target.dtype))

    def write():
        for target, source in zip(targets, sources, strict=True):
            distribution.extended.update(
                target, copy, args=(source,), group=False
            )

    tf.cond(pred, write, lambda: None)


def in_replica_context():
    """Whether we are inside a (non-default) strategy's replica function."""
    return (
        tf.distribute.has_strategy()
        and not tf.distribute.in_cross_replica_context()
    )


def apply_if_all_replicas_finite(all_finite, apply, skip, after, grads):
    """Under a tf.distribute strategy, in replica context: `apply(grads)` on
    every replica if no replica's `all_finite(grads)` is false, else
    `skip()`; then `after(finite)`.

    The host's apply synchronizes replicas (`merge_call`), which TF does not
    allow inside a `cond` in replica context; so, as Keras's
    LossScaleOptimizer does, the decision is taken in cross-replica context,
    where the replicas' flags are combined (a NaN on one replica is a NaN on
    all after the all-reduce).
    """

    def cross_replica(distribution, grads):
        # number of replicas whose gradients are not all finite (ReduceOp
        # has no MIN, so count them)
        bad_per_replica = distribution.extended.call_for_each_replica(
            lambda g: 1.0 - tf.cast(all_finite(g), tf.float32), args=(grads,)
        )
        bad = distribution.reduce(
            tf.distribute.ReduceOp.SUM, bad_per_replica, axis=None
        )
        finite = tf.equal(bad, 0.0)

        def apply_fn():
            distribution.extended.call_for_each_replica(apply, args=(grads,))

        tf.cond(finite, apply_fn, skip)
        after(finite)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads,))
