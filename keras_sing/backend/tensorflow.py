"""TensorFlow backend: dense gradients for standardization.

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
