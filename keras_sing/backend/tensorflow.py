"""TensorFlow backend: dense gradients, tf.distribute, graph assertions.

`tf.GradientTape` returns `tf.IndexedSlices` for gathered tables
(`Embedding`). Standardization needs the whole tensor (its norm, and means
across rows for kernels), and SING's Adam step updates every row's moments
anyway, so sparse gradients are made dense first.
"""

import tensorflow as tf


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
    tf.debugging.Assert(condition, [message.format(step="<step>"), "step:", step])


def in_replica_context():
    """Whether we are inside a (non-default) strategy's replica function."""
    return tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()


def distributed_apply_if_finite(sing, grads, trainable_variables):
    """`sing.inner_optimizer.apply`, skipped on all replicas if any replica
    has a non-finite gradient.

    The host's apply synchronizes replicas (`merge_call`), which TF does not
    allow inside a `cond` in replica context; so, as Keras's
    LossScaleOptimizer does, the decision is taken in cross-replica context,
    where the replicas' flags are combined (a NaN on one replica is a NaN on
    all after the all-reduce).
    """
    from keras_sing.sing import all_finite

    def cross_replica(distribution, grads, trainable_variables):
        # number of replicas whose gradients are not all finite (ReduceOp
        # has no MIN, so count them)
        bad_per_replica = distribution.extended.call_for_each_replica(
            lambda g: 1.0 - tf.cast(all_finite(g), tf.float32), args=(grads,)
        )
        bad = distribution.reduce(tf.distribute.ReduceOp.SUM, bad_per_replica, axis=None)
        finite = tf.equal(bad, 0.0)

        def apply_fn():
            distribution.extended.call_for_each_replica(
                sing.inner_optimizer.apply, args=(grads, trainable_variables)
            )

        tf.cond(finite, apply_fn, sing._count_skipped_step)
        sing._raise_if_requested(finite, lambda: sing.iterations + 1)

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(grads, trainable_variables)
    )
