"""keras_sing: SING (Stabilized and Normalized Gradient) for Keras 3.

    model.compile(optimizer=keras_sing.SING(keras.optimizers.AdamW(1e-2)), ...)
"""

from keras_sing import callbacks
from keras_sing import datasets
from keras_sing._host import fan_in_axes
from keras_sing.axes import default_centralize_axes
from keras_sing.sing import SING
from keras_sing.version import __version__

__all__ = (
    "SING",
    "__version__",
    "callbacks",
    "datasets",
    "default_centralize_axes",
    "fan_in_axes",
)
