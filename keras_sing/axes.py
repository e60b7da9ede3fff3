"""Which axes of a Keras variable are its fan-in (the axes SING averages over).

Keras puts the output axis last, PyTorch first. Gradient centralization
subtracts one mean per output unit, so in Keras layout it averages over every
axis but the last. Two common layers break that rule:

- `Embedding` tables are `(vocab, dim)`: one row per token, so the mean is
  taken per row, over every axis but the first.
- `EinsumDense` kernels (inside `MultiHeadAttention`, KerasHub transformers)
  are shaped by an equation, e.g. `"abc,cde->abde"` gives a `(dim, heads,
  head_dim)` kernel whose fan-in is axis 0 only; their biases (`(heads,
  head_dim)`) have no fan-in at all.

A Keras variable does not know its layer, so `default_centralize_axes` decides
from the variable alone (its rank and its name); `fan_in_axes(model)` reads
each layer and returns the exact rule for every variable of a model, to pass
as `SING(..., centralize_axes=fan_in_axes(model))`.
"""

import re

import keras


def default_centralize_axes(variable):
    """The centralization axes SING uses when none are given.

    - ndim <= 1 (biases, norm scales, scalars): `None`, no centralization;
    - a variable named `embeddings` (Keras `Embedding`, KerasHub
      `ReversibleEmbedding` and `PositionEmbedding`): all axes but the first,
      one mean per row;
    - anything else: all axes but the last, one mean per output unit.

    Args:
        variable: a `keras.Variable` (anything with `shape` and `name`).

    Returns:
        A tuple of axes, or `None`.
    """
    ndim = len(variable.shape)
    if ndim <= 1:
        return None
    if variable.name == "embeddings":
        return tuple(range(1, ndim))
    return tuple(range(ndim - 1))


def einsum_kernel_fan_in(equation, ndim):
    """The contracted axes of an `EinsumDense` kernel, from its equation.

    The kernel is the second operand; its contracted (fan-in) axes are the
    letters that do not appear in the output. `"abc,cde->abde"` gives `(0,)`,
    `"abcd,cde->abe"` gives `(0, 1)`. Falls back to all axes but the last
    when the equation cannot be parsed.
    """
    match = re.fullmatch(r"([\w.]+),([\w.]+)->([\w.]+)", equation.replace(" ", ""))
    if match is None:
        return tuple(range(ndim - 1))
    kernel, output = match.group(2).replace("...", ""), match.group(3)
    axes = tuple(i for i, ch in enumerate(kernel) if ch not in output)
    if len(kernel) != ndim or not axes:
        return tuple(range(ndim - 1))
    return axes


def fan_in_axes(model):
    """Per-variable centralization axes read from the layers of `model`.

    Returns a dict `{regex: axes}` (anchored, escaped variable paths) for
    every `EinsumDense` kernel and bias and every `Embedding` table in
    `model`, nested layers included, ready for
    `SING(..., centralize_axes=fan_in_axes(model))`. Variables not in the
    dict get `default_centralize_axes`.

    Example:

        model = keras_hub.models.BertBackbone(...)
        opt = keras_sing.SING(keras.optimizers.AdamW(1e-2),
                              centralize_axes=keras_sing.fan_in_axes(model))
    """
    rules = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.EinsumDense):
            kernel = getattr(layer, "_kernel", None)
            if kernel is not None:
                rules[_exact(kernel.path)] = einsum_kernel_fan_in(
                    layer.equation, len(kernel.shape)
                )
            if getattr(layer, "bias", None) is not None:
                rules[_exact(layer.bias.path)] = None
        elif isinstance(layer, keras.layers.Embedding):
            table = getattr(layer, "_embeddings", None)
            if table is not None:
                rules[_exact(table.path)] = tuple(range(1, len(table.shape)))
    return rules


def _exact(path):
    return "^" + re.escape(path) + "$"


def normalize_axes(axes, ndim, path):
    """Validates `axes` for a variable of rank `ndim`; returns sorted axes."""
    if axes is None:
        return None
    if isinstance(axes, int):
        axes = (axes,)
    try:
        axes = tuple(int(a) for a in axes)
    except TypeError:
        raise ValueError(
            "Argument `centralize_axes` must give a tuple of ints or None for "
            f"each variable. Received {axes!r} for variable '{path}'."
        ) from None
    if any(not -ndim <= a < ndim for a in axes):
        raise ValueError(
            f"Argument `centralize_axes` gave axes {axes} for variable "
            f"'{path}' of rank {ndim}; each axis must be in [{-ndim}, {ndim})."
        )
    return tuple(sorted({a % ndim for a in axes})) or None
