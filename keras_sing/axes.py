"""Which axes of a Keras variable are its fan-in (the axes SING averages over).

The published SING centralizes each PyTorch weight over dims 1.. (one mean
per output unit) and never centralizes 1-D tensors. Keras puts the output
axis last, and the true fan-in depends on the layer, so the rule is stated
per layer, in Keras layout (docs/algorithm.md has the table):

| Keras layer, variable                  | Keras shape         | axes          |
|----------------------------------------|---------------------|---------------|
| `Dense`, `Conv*`, recurrent kernels,   | `(..., out)`        | all but last  |
|   separable pointwise kernels          |                     |               |
| `Conv*Transpose`                       | `(*k, out, in)`     | all but last  |
|                                        |                     | (per input    |
|                                        |                     |  channel)     |
| `DepthwiseConv*`, separable depthwise  | `(*k, in, mult)`    | spatial only  |
| `Embedding` tables, position tables    | `(rows, dim)`       | per row       |
| `EinsumDense` kernel                   | per equation        | contracted    |
| `EinsumDense` LoRA `A`                 | kernel's but last,  | the kernel's  |
|                                        |   then `rank`       |   contracted  |
| `EinsumDense` bias, GRU's `(2, 3u)`    | any                 | none          |
|   bias, normalization layers, `PReLU`, |                     |               |
|   anything 1-D                         |                     |               |
| `TorchModuleWrapper` parameters        | PyTorch layout      | all but first |

A variable does not know its layer; SING learns it from the model that
builds the optimizer (see `keras_sing.SING` and `keras_sing.fan_in_axes`).
Without a model (a custom loop), `guess_centralize_axes` decides from the
variable's rank and name, and SING warns for the variables where that guess
may be wrong.
"""

import math
import numbers
import re

import keras

# Returned by `layer_centralize_axes` for a layer it has no rule for.
UNKNOWN = "unknown"


def all_but_last(ndim):
    """One mean per output unit when the output axis is last."""
    return tuple(range(ndim - 1)) or None


def per_row(ndim):
    """One mean per row (embedding tables: one row per token)."""
    return tuple(range(1, ndim)) or None


def spatial(ndim):
    """One mean per filter of a depthwise kernel `(*k, in, mult)`."""
    return tuple(range(ndim - 2)) or None


def einsum_kernel_fan_in(equation, ndim):
    """The contracted axes of an `EinsumDense` kernel, from its equation.

    The kernel is the second operand; its contracted (fan-in) axes are the
    letters that do not appear in the output. `"abc,cde->abde"` gives `(0,)`,
    `"abcd,cde->abe"` gives `(0, 1)`. Falls back to all axes but the last
    when the equation cannot be parsed.
    """
    match = re.fullmatch(
        r"([\w.]+),([\w.]+)->([\w.]+)", equation.replace(" ", "")
    )
    if match is None:
        return all_but_last(ndim)
    kernel, output = match.group(2).replace("...", ""), match.group(3)
    axes = tuple(i for i, ch in enumerate(kernel) if ch not in output)
    if len(kernel) != ndim or not axes:
        return all_but_last(ndim)
    return axes


def einsum_lora_a_fan_in(equation, ndim):
    """The fan-in of an `EinsumDense` LoRA factor `A`.

    `enable_lora` factors the kernel's update as `A @ B`: `A` has the
    kernel's axes but the last, then `rank`; `B` is `(rank, last)`. The
    input meets `A` on the kernel's contracted axes, so those are `A`'s
    fan-in: one mean per `(kept axes..., rank)` unit, e.g. per head and
    rank for an attention query `(dim, heads, rank)` (the kernel's `(0,)`,
    not all but the last). Falls back to all axes but the last where the
    kernel's last axis is contracted.
    """
    kernel_axes = einsum_kernel_fan_in(equation, ndim)
    if kernel_axes is None or ndim - 1 in kernel_axes:
        return all_but_last(ndim)
    return kernel_axes


def layer_centralize_axes(layer, variable):
    """The published fan-in axes of `variable`, a weight of `layer`.

    Returns a tuple of axes, `None` (no centralization), or `UNKNOWN` when
    `layer` is not a layer this table knows (a custom layer's weight of rank
    2 or more).
    """
    ndim = len(variable.shape)
    name = variable.name
    if ndim <= 1:
        return None
    layers = keras.layers
    if isinstance(layer, layers.EinsumDense):
        if name == "kernel":
            return einsum_kernel_fan_in(layer.equation, ndim)
        if name == "bias":
            return None
        if name == "lora_kernel_a":
            return einsum_lora_a_fan_in(layer.equation, ndim)
        return all_but_last(ndim)  # LoRA's B: (rank, last kernel axis)
    if _is_depthwise(layer):
        return spatial(ndim) if name in ("kernel", "depthwise_kernel") else (
            all_but_last(ndim)
        )
    if isinstance(layer, layers.Embedding):
        # the table (vocab, dim), per row; KerasHub's untied output
        # projection `reverse_embeddings` (dim, vocab) is a Linear
        return per_row(ndim) if name == "embeddings" else all_but_last(ndim)
    if is_normalization(layer):
        # over several axes (`LayerNormalization(axis=[-2, -1])`), the
        # scale and offset have the normalized shape, as PyTorch's
        # `LayerNorm(normalized_shape)` weight: centralized over dims 1..
        return per_row(ndim)
    if isinstance(layer, layers.PReLU):
        return None  # 1-D in PyTorch (one slope per channel)
    if isinstance(layer, _LINEAR_LAYERS) or type(layer).__name__ in (
        _LINEAR_CELLS
    ):
        # GRU's bias with `reset_after=True`, (2, 3 units): PyTorch's 1-D
        # `bias_ih` and `bias_hh`, stacked (over its axis 0, the update and
        # reset gates' rows get the same gradient: centralized, they
        # would never train)
        return None if name == "bias" else all_but_last(ndim)
    if type(layer).__name__ == "TorchModuleWrapper":
        # a torch module's own parameters, in PyTorch layout
        return per_row(ndim)
    rule = _KERAS_HUB_RULES.get((type(layer).__name__, name))
    if rule is not None:
        return rule(ndim)
    return UNKNOWN


def _is_depthwise(layer):
    return isinstance(
        layer,
        tuple(
            getattr(keras.layers, name)
            for name in (
                "DepthwiseConv1D",
                "DepthwiseConv2D",
                "SeparableConv1D",
                "SeparableConv2D",
            )
        ),
    )


def is_normalization(layer):
    """Whether `layer` is a normalization layer (by its class name)."""
    # Keras's BatchNormalization, LayerNormalization, GroupNormalization,
    # ..., and KerasHub's RMSNormalization/LayerNorm variants
    return "Normalization" in type(layer).__name__ or type(
        layer
    ).__name__.endswith(("LayerNorm", "RMSNorm"))


_LINEAR_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in (
        "Dense",
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "ConvLSTM1D",
        "ConvLSTM2D",
        "ConvLSTM3D",
        "SimpleRNNCell",
        "GRUCell",
        "LSTMCell",
        "SimpleRNN",
        "GRU",
        "LSTM",
    )
    if hasattr(keras.layers, name)
)

# Cells Keras does not export, which hold their layers' weights: ConvLSTM's
# kernel `(*k, in, 4 filters)` and recurrent kernel `(*k, filters, 4
# filters)` are convolutions, one mean per output channel (as LSTM's).
_LINEAR_CELLS = ("ConvLSTMCell",)


def is_unknown(axes):
    """Whether `axes` is the `UNKNOWN` marker (and not axes)."""
    return isinstance(axes, str) and axes == UNKNOWN


def _expert_fan_in(ndim):
    """Stacked experts `(experts, in, out)`: one Linear per expert."""
    del ndim
    return (1,)


# KerasHub layers with weights of their own, by (class name, variable name):
# their PyTorch twins (torchvision/timm/Hugging Face) and the axes that
# follow (tests/data/kerashub_custom_variables.md lists how each was found).
# Matched by name so that keras_hub stays optional. Tokens and position
# tables held as `nn.Parameter(1, ..., D)` are centralized over dims 1..,
# i.e. `per_row`; `nn.Embedding` tables per row.
_KERAS_HUB_RULES = {
    # untied (no `token_embedding` given): an lm-head nn.Linear(D, vocab)
    ("MaskedLMHead", "output_kernel"): all_but_last,
    ("PositionEmbedding", "position_embeddings"): per_row,
    ("PositionEmbedding", "embeddings"): per_row,
    ("ViTPatchingAndEmbedding", "class_token"): per_row,
    ("DeiTEmbeddings", "class_token"): per_row,
    ("DeiTEmbeddings", "distillation_token"): per_row,
    ("DeiTEmbeddings", "position_embedding"): per_row,
    ("DINOV2Embedding", "cls_token"): per_row,
    ("DINOV2Embedding", "mask_token"): per_row,
    ("DINOV2Embedding", "register_tokens"): per_row,
    ("DINOV2Embedding", "interpolated_position_embeddings"): per_row,
    ("DINOV3Embedding", "cls_token"): per_row,
    ("DINOV3Embedding", "mask_token"): per_row,
    ("DINOV3Embedding", "register_tokens"): per_row,
    ("MixtralMoeExperts", "expert_feedforward_gate_dense"): _expert_fan_in,
    ("MixtralMoeExperts", "expert_feedforward_intermediate_dense"): (
        _expert_fan_in
    ),
    ("MixtralMoeExperts", "expert_feedforward_output_dense"): _expert_fan_in,
    ("QwenMoeExperts", "expert_feedforward_gate_dense"): _expert_fan_in,
    ("QwenMoeExperts", "expert_feedforward_output_dense"): _expert_fan_in,
    ("Qwen3MoeExperts", "expert_feedforward_gate_dense"): _expert_fan_in,
    ("Qwen3MoeExperts", "expert_feedforward_output_dense"): _expert_fan_in,
    # GPT-OSS's experts are one 3-D Parameter in PyTorch (and its biases
    # 2-D ones): the published rule gives one mean per expert
    ("GptOssExperts", "gate_up_proj"): per_row,
    ("GptOssExperts", "down_proj"): per_row,
    ("GptOssExperts", "gate_up_proj_bias"): per_row,
    ("GptOssExperts", "down_proj_bias"): per_row,
    # a depthwise Conv1d's weight (C, 1, K), kept as (C, K): per channel
    ("Qwen3_5GatedDeltaNet", "conv1d_kernel"): per_row,
    ("RelativeEmbedding", "rel_embedding"): per_row,
    ("XLNetAttentionMaskLayer", "mask_emb"): per_row,
    ("XLNetEncoder", "content_attention_bias"): per_row,
    ("XLNetEncoder", "positional_attention_bias"): per_row,
    ("XLNetEncoder", "segment_attention_bias"): per_row,
    ("XLNetEncoder", "segment_encoding"): per_row,
    ("SigLIPMultiHeadAttentionPooling", "variable"): per_row,
    ("WindowAttention", "relative_position_bias_table"): per_row,
    ("AddPositionalEmbedding", "pos_embed"): per_row,
    ("AddRelativePositionalEmbedding", "rel_pos_h"): per_row,
    ("AddRelativePositionalEmbedding", "rel_pos_w"): per_row,
}


def guess_centralize_axes(variable):
    """The axes SING uses for a variable whose layer it does not know.

    Public as `keras_sing.default_centralize_axes`. SING uses it in a
    custom loop without `centralize_axes` (no model in sight), and for a
    custom layer's own weights; it warns for the variables where the guess
    may be wrong (rank 3 and more; 2-D biases and normalization scales).
    From the variable's rank and name:

    - ndim <= 1 (biases, norm scales, scalars): `None`, no centralization;
    - a variable named `embeddings`: all axes but the first, one mean per
      row;
    - anything else: all axes but the last, one mean per output unit
      (exact for `Dense`, convolution and recurrent kernels; wrong for
      depthwise and `EinsumDense` kernels, which `keras_sing.fan_in_axes`
      gets right).

    Update rule:

        g = G - mean(G, axes)        axes = default_centralize_axes(W)

    Args:
        variable: a `keras.Variable` (anything with `shape` and `name`).

    Returns:
        A tuple of axes, or `None`.

    Examples:
        >>> import numpy as np
        >>> import keras
        >>> import keras_sing
        >>> guess = keras_sing.default_centralize_axes
        >>> guess(keras.Variable(np.zeros((3, 3, 8, 16)), name="kernel"))
        (0, 1, 2)
        >>> guess(keras.Variable(np.zeros((100, 8)), name="embeddings"))
        (1,)
        >>> print(guess(keras.Variable(np.zeros((16,)), name="bias")))
        None

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    ndim = len(variable.shape)
    if ndim <= 1:
        return None
    if variable.name == "embeddings":
        return per_row(ndim)
    return all_but_last(ndim)


# The 0.1 name of `guess_centralize_axes`, kept public.
default_centralize_axes = guess_centralize_axes


# The names of Keras's 2-D linear maps `(in, out)` (kernels, LoRA factors)
# and embedding tables, for which the rank-and-name guess is exact.
_LINEAR_2D = (
    "kernel",
    "recurrent_kernel",
    "embeddings",
    "reverse_embeddings",
    "lora_kernel_a",
    "lora_kernel_b",
    "lora_embeddings_a",
    "lora_embeddings_b",
)


def is_guess_certain(variable):
    """Whether `guess_centralize_axes` is all but sure, whatever the layer:
    1-D variables, and the 2-D ones that Keras's layers name as linear
    maps `(in, out)` or embedding tables (`_LINEAR_2D`). Not: other 2-D
    variables (`EinsumDense`'s `(heads, head_dim)` bias, GRU's `(2, 3
    units)` one, a `LayerNormalization`'s scale over two axes, a custom
    layer's table), nor anything of rank 3 and more."""
    ndim = len(variable.shape)
    return ndim <= 1 or (ndim == 2 and variable.name in _LINEAR_2D)


def rules_from_layers(variables, layer_of):
    """`{id(variable): axes or UNKNOWN}` for `variables`, from
    `layer_of = {id(variable): layer}` (variables missing from it are
    left out)."""
    return {
        id(v): layer_centralize_axes(layer_of[id(v)], v)
        for v in variables
        if id(v) in layer_of
    }


def exact_path_rules(variables, rules):
    """`rules` as `centralize_axes`'s dict: `{anchored escaped path: axes}`
    for each variable with a known rule."""
    return {
        _exact(v.path): rules[id(v)]
        for v in variables
        if not is_unknown(rules.get(id(v), UNKNOWN))
    }


def _exact(path):
    return "^" + re.escape(path) + "$"


def fan_in_size(shape, axes):
    """How many elements each mean is taken over."""
    return math.prod(int(shape[a]) for a in axes) if axes else 0


def is_axis(value):
    """Whether `value` is an axis: an int (NumPy's included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_axes(value):
    """Whether `value` gives centralization axes: `None`, an axis, or a
    list or tuple of axes."""
    return (
        value is None
        or is_axis(value)
        or isinstance(value, (list, tuple)) and all(map(is_axis, value))
    )


def normalize_axes(axes, ndim, path):
    """Validates `axes` for a variable of rank `ndim`; returns sorted axes."""
    if axes is None:
        return None
    if hasattr(axes, "tolist"):  # a NumPy array or scalar
        axes = axes.tolist()
    if not is_axes(axes):
        raise ValueError(
            "Argument `centralize_axes` must give a tuple of ints or None for "
            f"each variable. Received {axes!r} for variable '{path}'."
        )
    axes = (int(axes),) if is_axis(axes) else tuple(int(a) for a in axes)
    if any(not -ndim <= a < ndim for a in axes):
        raise ValueError(
            f"Argument `centralize_axes` gave axes {axes} for variable "
            f"'{path}' of rank {ndim}; each axis must be in [{-ndim}, {ndim})."
        )
    return tuple(sorted({a % ndim for a in axes})) or None
