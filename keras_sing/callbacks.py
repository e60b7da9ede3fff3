"""Training insight from what SING computes anyway: per-layer gradient norms.

SING divides every variable's gradient by its L2 norm, so it knows every
norm at no extra cost; it keeps the last one per variable
(`SING.gradient_norm_variables`). `GradientNormMonitor` reads them during
`fit`, logs per-layer norms to the epoch logs (so `History`, `CSVLogger` and
`TensorBoard` placed after it record them) and to an optional CSV file, and
watches for the pattern the SING authors warn about: the loss falls while a
normalization layer's gradient norm keeps growing. When it sees it, it warns
and says what to freeze or exclude.
"""

import csv
import math
import numbers
import os
import re
import warnings

import keras
import numpy as np

from keras_sing import _host
from keras_sing import axes as axes_lib
from keras_sing.sing import SING


def find_sing(optimizer):
    """The SING optimizer in `optimizer`: itself, or inside a wrapper.

    Follows `inner_optimizer` links, so a SING inside a
    `LossScaleOptimizer` (what `mixed_float16` gives) is found, and a
    `MultiOptimizer`'s `optimizers` (the first SING among them).

    Args:
        optimizer: a Keras optimizer, or `None`.

    Returns:
        The `keras_sing.SING` instance, or `None` if there is none.

    Examples:
        >>> import keras
        >>> import keras_sing
        >>> from keras_sing.callbacks import find_sing
        >>> opt = keras_sing.SING()
        >>> find_sing(keras.optimizers.LossScaleOptimizer(opt)) is opt
        True
        >>> print(find_sing(keras.optimizers.AdamW()))
        None

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    sings = _sings_in(optimizer)
    return sings[0] if sings else None


def _sings_in(optimizer):
    """Every SING in `optimizer`: itself, inside wrappers
    (`inner_optimizer`) and among a `MultiOptimizer`'s `optimizers`."""
    if optimizer is None:
        return []
    if isinstance(optimizer, SING):
        return [optimizer]
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return _sings_in(inner)
    return [
        sing
        for member in getattr(optimizer, "optimizers", None) or []
        for sing in _sings_in(member)
    ]


def layer_of(path):
    """The layer path of a variable path: all but the last component.

    Args:
        path: a variable path, e.g. `"model/block/layer_norm/gamma"`.

    Returns:
        The path of its layer, e.g. `"model/block/layer_norm"` (the path
        itself if it has no `/`).

    Examples:
        >>> from keras_sing.callbacks import layer_of
        >>> layer_of("model/block/layer_norm/gamma")
        'model/block/layer_norm'

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    return path.rsplit("/", 1)[0] if "/" in path else path


def exclude_regex(layer):
    """An `exclude` regex that selects exactly one layer's variables.

    `SING(exclude=...)` searches its regexes in variable paths; this one
    matches `<layer>/<variable>` and nothing else (not a layer whose path
    merely starts or ends the same, e.g. `block_1/ln` against
    `block_11/ln` or `block_1/ln_2`).

    Args:
        layer: the layer's path, as `layer_of` gives it.

    Returns:
        The regex, a string.

    Examples:
        >>> import re
        >>> from keras_sing.callbacks import exclude_regex
        >>> rule = exclude_regex("encoder/block_1/ln")
        >>> [bool(re.search(rule, p)) for p in (
        ...     "encoder/block_1/ln/gamma", "encoder/block_11/ln/gamma",
        ...     "encoder/block_1/ln_2/gamma", "my_encoder/block_1/ln/gamma")]
        [True, False, False, False]

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023 (the advice to exclude
          normalization layers).
    """
    return f"(^|/){re.escape(layer)}/[^/]+$"


def normalization_layer_paths(model):
    """The normalization layers of `model`, as in variable paths.

    What `GradientNormMonitor` watches by default: every layer whose
    class name contains "Normalization" (or ends in "LayerNorm",
    "RMSNorm"), whatever its name.

    Args:
        model: a built `keras.Model`.

    Returns:
        A set of layer paths (the `layer_of` of their variables' paths).

    Examples:
        >>> import keras
        >>> from keras_sing.callbacks import normalization_layer_paths
        >>> model = keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(4, name="dense"),
        ...      keras.layers.LayerNormalization(name="norm")],
        ...     name="model",
        ... )
        >>> normalization_layer_paths(model)
        {'model/norm'}

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023 (the advice on
          normalization layers).
    """
    owner = _host.layers_of(model)
    return {
        layer_of(_host.path_of(v))
        for v in model.weights
        if axes_lib.is_normalization(owner[id(v)])
    }


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_writable_folder(path):
    """The CSV file's folder exists and can be written, checked when
    training starts (as Keras's CSVLogger opens its file), not at the
    first epoch's end."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"GradientNormMonitor cannot write csv_path={os.fspath(path)!r}: "
            f"the folder {folder!r} does not exist. Create it first, e.g. "
            "os.makedirs(folder, exist_ok=True)."
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(
            f"GradientNormMonitor cannot write csv_path={os.fspath(path)!r}: "
            f"the folder {folder!r} is not writable."
        )


def _check_arguments(every_n_batches, window, min_growth, watch):
    """`GradientNormMonitor`'s arguments, checked when it is created rather
    than epochs into `fit`."""
    good_growth = (
        isinstance(min_growth, numbers.Real)
        and not isinstance(min_growth, bool)
        and math.isfinite(min_growth)
        and min_growth > 1
    )
    if not (
        _is_int(every_n_batches) and every_n_batches >= 1
        and _is_int(window) and window >= 1 and good_growth
    ):
        raise ValueError(
            "GradientNormMonitor needs every_n_batches and window ints >= 1 "
            "and min_growth a finite number > 1. Received: "
            f"every_n_batches={every_n_batches!r}, window={window!r}, "
            f"min_growth={min_growth!r}"
        )
    if watch is None:
        return
    if not isinstance(watch, str):
        raise TypeError(
            "Argument `watch` is a regex string searched in layer paths, or "
            f"None for the normalization layers. Received: {watch!r}"
        )
    try:
        re.compile(watch)
    except re.error as error:
        raise ValueError(
            f"Argument `watch` holds an invalid regex {watch!r} ({error}). "
            "Escape it with re.escape(...) to match a path literally."
        ) from None


def _csv_columns(path):
    """The layer columns of the monitor's CSV file at `path` (its header
    after `epoch`), or `None` if there is no such file."""
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    except FileNotFoundError:
        return None
    if not header or header[0] != "epoch":
        return None
    return header[1:]


class GradientNormMonitor(keras.callbacks.Callback):
    """Logs per-layer gradient norms from SING and warns on norm-layer growth.

    SING divides every gradient by its norm, so it knows every norm at no
    extra cost (`SING.gradient_norm_variables`). This callback reads them
    every `every_n_batches` batches (with `steps_per_execution > 1`, at the
    end of each execution that reaches a multiple of n) and logs, per layer
    and epoch:

        grad_norm/<layer path> =
            mean over sampled batches of
            sqrt(sum over the layer's variables of ||g||_2^2)

    to the epoch logs (so `History`, `CSVLogger` and `TensorBoard` placed
    after it record them) and to an optional CSV file. `self.epoch_norms`
    (one `{layer: norm}` per epoch), `self.epoch_losses` and `self.alerts`
    keep what it saw. A `fit` that starts at epoch 0 starts them (and the
    CSV file) afresh; one that resumes (`initial_epoch > 0`) goes on, and
    appends to the CSV file, in its columns, even from a new callback (a
    resumed process).

    The warning fires, once per layer, when over the last `window` epochs the
    training loss fell while the gradient norm of a layer whose path matches
    `watch` rose at every epoch, by `min_growth` x in all. The authors'
    advice then: freeze that layer's scale and offset (`layer.trainable =
    False`) or exclude it from SING (`SING(..., exclude=exclude_regex(
    "<layer>"))`, the regex the warning prints).

    Args:
        every_n_batches: sample the norms every n batches (each sample reads
            a few scalars back from the device). Defaults to `10`.
        csv_path: if set, one row per epoch with every layer's norm.
            Defaults to `None`.
        log_layers: add `grad_norm/<layer>` entries to the epoch logs.
            Defaults to `True`.
        watch: regex searched in layer paths, the layers to watch; `None`
            watches the model's normalization layers (any layer whose class
            name contains "Normalization", e.g. LayerNormalization,
            BatchNormalization, RMSNormalization, or ends in "LayerNorm" or
            "RMSNorm", as KerasHub's do, whatever its name).
            Defaults to `None`.
        window: epochs over which the pattern must hold. Defaults to `3`.
        min_growth: growth factor of the norm over `window`. Defaults to
            `1.5`.
        warn: emit `warnings.warn` (alerts are also kept in `self.alerts`).
            Defaults to `True`.

    Raises:
        ValueError: `every_n_batches < 1`, `window < 1`,
            `min_growth <= 1`, or `watch` an invalid regex; at the start
            of training, if the model's optimizer is not a SING, or has
            none inside (a `LossScaleOptimizer`, a `MultiOptimizer`).
        TypeError: `watch` not a string or `None`, or `csv_path` not a
            path or `None`.
        FileNotFoundError: at the start of training, if `csv_path`'s
            folder does not exist.
        PermissionError: at the start of training, if that folder is not
            writable.

    Examples:
        >>> import numpy as np
        >>> import keras
        >>> import keras_sing
        >>> model = keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(2, name="dense")],
        ...     name="model",
        ... )
        >>> model.compile(optimizer=keras_sing.SING(), loss="mse")
        >>> from keras_sing.callbacks import GradientNormMonitor
        >>> monitor = GradientNormMonitor(every_n_batches=1)
        >>> history = model.fit(
        ...     np.ones((8, 4)), np.zeros((8, 2)), epochs=2, verbose=0,
        ...     callbacks=[monitor],
        ... )
        >>> sorted(history.history)
        ['grad_norm/model/dense', 'loss']
        >>> len(monitor.epoch_norms), monitor.alerts
        (2, [])

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023: the advice to watch
          normalization layers' gradient norms and to freeze or exclude
          a growing one.
    """

    def __init__(
        self,
        every_n_batches=10,
        csv_path=None,
        log_layers=True,
        watch=None,
        window=3,
        min_growth=1.5,
        warn=True,
    ):
        super().__init__()
        _check_arguments(every_n_batches, window, min_growth, watch)
        if csv_path is not None and not isinstance(
            csv_path, (str, os.PathLike)
        ):
            raise TypeError(
                "Argument `csv_path` must be a file path (a str or "
                f"os.PathLike) or None. Received: csv_path={csv_path!r}"
            )
        self.every_n_batches = every_n_batches
        self.csv_path = csv_path
        self.log_layers = log_layers
        self.watch = watch
        self.window = window
        self.min_growth = min_growth
        self.warn = warn
        self.epoch_norms = []  # one {layer: norm} per epoch
        self.epoch_losses = []
        self.alerts = []
        self._sums = {}
        self._samples = 0
        self._last_batch = -1  # the last batch Keras reported this epoch

    def on_train_begin(self, logs=None):
        if self.csv_path:
            _check_writable_folder(self.csv_path)
        self._watched = normalization_layer_paths(self.model)
        self._sings = _sings_in(self.model.optimizer)
        if not self._sings:
            raise ValueError(
                "GradientNormMonitor needs a model compiled with "
                "keras_sing.SING (or one inside a LossScaleOptimizer or a "
                "MultiOptimizer). "
                f"Received optimizer: {type(self.model.optimizer).__name__}."
            )

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0:  # a new run: a new history, as the CSV file
            self.epoch_norms, self.epoch_losses, self.alerts = [], [], []
        self._sums, self._samples = {}, 0
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        # with `steps_per_execution` s, Keras reports every s-th batch
        # (s - 1, 2s - 1, ...): sample when a multiple of n was passed
        n = self.every_n_batches
        last, self._last_batch = self._last_batch, batch
        if batch // n != last // n:
            self._sample()

    def _sample(self):
        pairs = [
            pair
            for sing in self._sings
            for pair in sing.gradient_norm_variables
        ]
        values = self._current_values([v for _, v in pairs])
        squares = {}
        for (path, _), value in zip(pairs, values, strict=True):
            layer = layer_of(path)
            squares[layer] = squares.get(layer, 0.0) + float(value) ** 2
        for layer, sq in squares.items():
            self._sums[layer] = self._sums.get(layer, 0.0) + np.sqrt(sq)
        self._samples += 1

    def _current_values(self, variables):
        # on JAX, `fit` keeps the state apart from the variables between
        # syncs; reading `Callback.model` syncs it
        _ = self.model
        return [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]

    def on_epoch_end(self, epoch, logs=None):
        if self._samples == 0:
            self._sample()
        norms = {k: v / self._samples for k, v in self._sums.items()}
        self.epoch_norms.append(norms)
        logs = logs if logs is not None else {}
        # one entry per epoch, aligned with `epoch_norms`
        self.epoch_losses.append(float(logs.get("loss", np.nan)))
        if self.log_layers:
            logs.update({f"grad_norm/{k}": v for k, v in norms.items()})
        if self.csv_path:
            self._write_csv(epoch, norms)
        self._check(epoch)

    def _write_csv(self, epoch, norms):
        if epoch > 0 and not hasattr(self, "_csv_layers"):
            # a resumed fit with a new callback: the file's columns
            self._csv_layers = _csv_columns(self.csv_path)
        new = epoch == 0 or self._csv_layers is None
        mode = "w" if new else "a"
        if new:
            self._csv_layers = sorted(norms)
        with open(self.csv_path, mode, newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["epoch", *self._csv_layers])
            writer.writerow(
                [epoch, *(norms.get(k, "") for k in self._csv_layers)]
            )

    def _check(self, epoch):
        w = self.window
        if len(self.epoch_norms) <= w:
            return
        losses = self.epoch_losses[-w - 1 :]
        if not losses[-1] < losses[0]:
            return
        warned = {a["layer"] for a in self.alerts}
        for layer in self.epoch_norms[-1]:
            if layer in warned or not self._is_watched(layer):
                continue
            series = [n.get(layer, np.nan) for n in self.epoch_norms[-w - 1 :]]
            rising = all(
                b > a for a, b in zip(series, series[1:], strict=False)
            )
            if rising and series[-1] >= self.min_growth * series[0]:
                self._alert(epoch, layer, losses, series)

    def _is_watched(self, layer):
        if self.watch is None:
            return layer in self._watched
        return re.search(self.watch, layer) is not None

    def _alert(self, epoch, layer, losses, series):
        name = layer.rsplit("/", 1)[-1]
        kind = "normalization layer" if self.watch is None else "layer"
        message = (
            f"keras_sing: over the last {self.window} epochs the training loss "
            f"fell ({losses[0]:.4g} -> {losses[-1]:.4g}) while the gradient "
            f"norm of {kind} '{layer}' kept growing "
            f"({series[0]:.3g} -> {series[-1]:.3g}). The SING authors advise "
            "freezing that layer's scale and offset (set trainable = False on "
            f"layer '{name}', then compile with a new optimizer) "
            "or excluding it from standardization: "
            f"SING(..., exclude=r'{exclude_regex(layer)}')."
        )
        self.alerts.append({
            "epoch": epoch, "layer": layer, "norms": series,
            "losses": losses, "message": message,
        })
        if self.warn:
            warnings.warn(message, stacklevel=2)
