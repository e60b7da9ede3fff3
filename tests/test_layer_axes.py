"""SING's default centralization axes, layer by layer, against PyTorch twins.

SING's step (1) subtracts one mean per output unit, over the unit's fan-in.
The published PyTorch optimizer does it for every tensor with ndim > 1, over
torch dims 1.. (1-D tensors are never centralized). So the exact rule for a
Keras variable is: the rule of its PyTorch twin, mapped back to Keras layout.

This file is an oracle independent of `keras_sing.axes`: each case states
the twin's layout as a NumPy mapping (Keras array -> torch array and back),
and the float64 oracle centralizes and normalizes in torch layout:

    T = to_torch(G)
    if T.ndim > 1 and prod(T.shape[1:]) > 1:   # fan-in of size 1: skipped
        T = T - T.mean(axis=(1, ..., T.ndim - 1))
    T = T / (||T||_2 + 1e-8)
    expected = from_torch(T)

The check goes through `model.compile(optimizer=SING(...))` + `model.fit`,
with nothing else given to SING: the raw gradient `G` of every trainable
variable is read off a one-step `fit` with `SGD(LR)` (`G = (W0 - W1) / LR`),
and the standardized one off a one-step `fit` of an identical copy with
`SING(SGD(LR), lookahead=False)`. `LR` is a power of two (exact division)
large enough that `W0 - W1` keeps ~7 digits of the step.

- per-layer cases (one per row of the rule table, `LAYER_CASES`): each case
  states its layer's variables and their twins by hand;
- whole models (KerasHub ViT, BERT, ResNet; MobileNetV2 inverted-residual
  blocks; a mixed MHA + depthwise model, also with jit_compile=True):
  `model_twins` walks `model._flatten_layers()` and gives each layer's own
  variables their twin by layer type and attribute; it raises on any
  ndim >= 2 variable it does not know, rather than guess. Biases and norm
  scales/offsets are randomized first (see `_perturb_vectors`);
- recurrent layers (GRU's `(2, 3 units)` bias), a layer shared with a
  sub-model, `TorchModuleWrapper` (torch), and KerasHub layers with
  weights of their own (their axes against their twins' tensors);
- a custom loop (`apply_gradients`, no model visible to SING):
  `centralize_axes=keras_sing.fan_in_axes(model)` gives the exact rule, and
  without it SING warns about the variables it cannot decide.
"""

import math
import re
import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import to_numpy

import keras_sing

LR = 1024.0
EPS = 1e-8
# JAX's un-jitted fit dispatches op by op (~3x slower than compiling these
# tiny steps); TF and torch run their ordinary graph/eager steps.
JIT = BACKEND == "jax"
RTOL = 1e-4  # float32 model vs the float64 oracle; atol = RTOL * max|expected|


# --------------------------------------------------------------------- #
# PyTorch twins: Keras-layout array -> (torch-layout array, inverse).
# --------------------------------------------------------------------- #


def _permute(perm):
    perm = tuple(perm)
    inverse = tuple(np.argsort(perm))
    return lambda g: (np.transpose(g, perm), lambda t: np.transpose(t, inverse))


def linear(g):
    """Dense kernel (in, out) -> nn.Linear.weight (out, in)."""
    return _permute((1, 0))(g)


def conv(g):
    """Conv{1,2,3}D kernel (*k, in/groups, out) -> nn.ConvNd.weight
    (out, in/groups, *k); also SeparableConv's pointwise kernel
    (1.., in*mult, out) -> (out, in*mult, 1..)."""
    n = g.ndim
    return _permute((n - 1, n - 2) + tuple(range(n - 2)))(g)


def conv_transpose(g):
    """Conv{1,2,3}DTranspose kernel (*k, out, in) -> nn.ConvTransposeNd.weight
    (in, out/groups, *k). Same permutation as `conv`, other meaning: torch's
    dim 0 is the transposed conv's INPUT channel."""
    n = g.ndim
    return _permute((n - 1, n - 2) + tuple(range(n - 2)))(g)


def depthwise(g):
    """DepthwiseConv / SeparableConv depthwise kernel (*k, in, mult) ->
    nn.ConvNd(in, in*mult, groups=in).weight (in*mult, 1, *k), output
    channel i*mult + m."""
    shape = g.shape
    k = shape[:-2]
    n = len(k)
    t = g.reshape(k + (shape[-2] * shape[-1],))  # (*k, in*mult), i*mult+m
    t = np.transpose(t, (n,) + tuple(range(n)))[:, None]  # (in*mult, 1, *k)

    def back(t):
        u = np.transpose(t[:, 0], tuple(range(1, n + 1)) + (0,))
        return u.reshape(shape)

    return t, back


def embedding(g):
    """Embedding table (vocab, dim) -> nn.Embedding.weight (vocab, dim)."""
    return g, lambda t: t


def reverse_embedding(g):
    """Untied output projection (dim, vocab) -> lm-head nn.Linear.weight
    (vocab, dim)."""
    return _permute((1, 0))(g)


def vector(g):
    """A tensor that is 1-D in torch (biases, norm scales/offsets, PReLU's
    alpha, EinsumDense biases of any rank, scalars): never centralized."""
    shape = g.shape
    return g.reshape(-1), lambda t: t.reshape(shape)


def parameter(g):
    """An nn.Parameter of the same shape (ViT class token (1, 1, dim))."""
    return g, lambda t: t


def batched_parameter(g):
    """An nn.Parameter with a leading 1: ViT's position embedding, Keras
    `Embedding` (seq, dim) -> torchvision/HF Parameter (1, seq, dim), so
    centralized over (seq, dim) at once."""
    shape = g.shape
    return g[None], lambda t: t.reshape(shape)


def einsum(equation):
    """EinsumDense kernel -> nn.Linear.weight (prod(kept), prod(contracted)):
    the contracted letters (absent from the output) are its fan-in."""
    eq = equation.replace(" ", "")
    m = re.fullmatch(r"([a-z.]+),([a-z]+)->([a-z.]+)", eq)
    assert m, equation
    kernel, output = m.group(2), m.group(3)
    fan_in = tuple(i for i, c in enumerate(kernel) if c not in output)
    kept = tuple(i for i, c in enumerate(kernel) if c in output)
    assert fan_in and kept, equation

    def twin(g):
        assert g.ndim == len(kernel), (equation, g.shape)
        p = np.transpose(g, kept + fan_in)
        t = p.reshape(
            math.prod(g.shape[i] for i in kept),
            math.prod(g.shape[i] for i in fan_in),
        )
        inverse = tuple(np.argsort(kept + fan_in))
        return t, lambda t: np.transpose(t.reshape(p.shape), inverse)

    twin.__name__ = f"einsum({equation})"
    return twin


def einsum_lora_a(equation):
    """An EinsumDense LoRA factor `A` (the kernel's axes but the last, then
    rank): the twin of a kernel whose last letter is the rank's, `r`."""
    eq = equation.replace(" ", "")
    inputs, output = eq.split("->")
    x, kernel = inputs.split(",")
    rank = next(c for c in "rstuvwxyz" if c not in eq)
    last = kernel[-1]
    return einsum(f"{x},{kernel[:-1]}{rank}->{output.replace(last, rank)}")


def oracle(grad, twin):
    """SING's (1)-(2) on `grad`, stated in its torch twin's layout."""
    g = np.asarray(grad, dtype=np.float64)
    t, back = twin(g)
    if t.ndim > 1 and math.prod(t.shape[1:]) > 1:
        t = t - t.mean(axis=tuple(range(1, t.ndim)), keepdims=True)
    t = t / (np.sqrt(np.sum(t * t)) + EPS)
    out = back(t)
    assert out.shape == g.shape
    return out


def keras_axes(shape, twin):
    """The twin's centralization axes in Keras layout (None: no centralizing),
    found by sending flat indices through the twin: the axes along which the
    Keras indices of one torch output row vary."""
    shape = tuple(shape)
    idx = np.arange(math.prod(shape)).reshape(shape)
    t, _ = twin(idx)
    if t.ndim <= 1 or math.prod(t.shape[1:]) <= 1:
        return None
    row = np.unravel_index(np.ravel(t[0]), shape)
    axes = tuple(a for a in range(len(shape)) if len(set(row[a])) > 1)
    # the row is a full axis-aligned block: one mean per output unit
    assert math.prod(shape[a] for a in axes) == t[0].size, (shape, twin)
    return axes


# --------------------------------------------------------------------- #
# The whole-model walker: each layer's own variables -> twin.
# --------------------------------------------------------------------- #


def _own(layer):
    return list(layer._trainable_variables)


def _attr(layer, *names):
    for name in names:
        v = getattr(layer, name, None)
        if isinstance(v, keras.Variable):
            return v
    return None


def layer_twins(layer, overrides):
    """`{id(variable): (variable, twin)}` for `layer`'s own trainable
    variables (not its sublayers')."""
    L = keras.layers
    own = _own(layer)
    named = {}  # id -> twin, from the layer's type and attribute
    kind = type(layer).__name__

    def put(twin, *attrs):
        v = _attr(layer, *attrs)
        if v is not None:
            named[id(v)] = twin

    if isinstance(layer, L.SeparableConv1D | L.SeparableConv2D):
        put(depthwise, "depthwise_kernel")
        put(conv, "pointwise_kernel")
    elif isinstance(layer, L.DepthwiseConv1D | L.DepthwiseConv2D):
        put(depthwise, "kernel")
    elif isinstance(
        layer, L.Conv1DTranspose | L.Conv2DTranspose | L.Conv3DTranspose
    ):
        put(conv_transpose, "kernel")
    elif isinstance(layer, L.Conv1D | L.Conv2D | L.Conv3D):
        put(conv, "_kernel", "kernel")
    elif isinstance(layer, L.EinsumDense):
        put(einsum(layer.equation), "_kernel", "kernel")
    elif isinstance(layer, L.Dense):
        put(linear, "_kernel", "kernel")
    elif isinstance(layer, L.Embedding):
        put(embedding, "_embeddings", "embeddings")
        if kind == "ReversibleEmbedding":  # KerasHub, untied output table
            put(reverse_embedding, "reverse_embeddings")
    elif isinstance(layer, L.PReLU):  # torch nn.PReLU: (num_parameters,)
        put(vector, "alpha")
    elif kind in ("LayerNormalization", "RMSNormalization"):
        # torch LayerNorm/RMSNorm(normalized_shape): weights of the
        # normalized shape, 2-D and more over several axes (1-D: `vector`)
        for name in ("gamma", "beta", "scale"):
            v = _attr(layer, name)
            if v is not None and len(v.shape) >= 2:
                named[id(v)] = parameter
    elif isinstance(layer, L.SimpleRNNCell | L.LSTMCell | L.GRUCell):
        # nn.RNN/LSTM/GRU weight_ih (gates*units, in), weight_hh (gates*units,
        # units); GRU's reset_after bias (2, 3 units) is bias_ih and bias_hh,
        # two 1-D tensors (`vector` below: normalized here as one tensor)
        put(linear, "kernel")
        put(linear, "recurrent_kernel")
    elif kind == "TorchModuleWrapper":  # the torch module's own tensors
        for v in own:
            if len(v.shape) >= 2:
                named[id(v)] = parameter
    elif kind == "PositionEmbedding":  # KerasHub; HF BERT/GPT-2: nn.Embedding
        put(embedding, "position_embeddings")
    elif kind == "ViTPatchingAndEmbedding":  # KerasHub ViT
        put(parameter, "class_token")
        pos = getattr(layer, "position_embedding", None)
        if pos is not None:
            overrides[id(pos.embeddings)] = batched_parameter
    # LoRA (`enable_lora`): `B` (rank, out) is peft's lora_B, a Linear from
    # the rank; `A` is met by the input where the kernel was
    put(linear, "lora_kernel_b", "lora_embeddings_b")
    if isinstance(layer, L.EinsumDense):
        put(einsum_lora_a(layer.equation), "lora_kernel_a")
    elif isinstance(layer, L.Conv1D | L.Conv2D | L.Conv3D):
        put(conv, "lora_kernel_a")
    else:  # Dense (in, rank); Embedding: peft's lora_embedding_A (r, vocab)
        put(linear, "lora_kernel_a", "lora_embeddings_a")
    put(vector, "bias")  # any layer's bias is 1-D in torch (EinsumDense's too)
    out = {}
    for v in own:
        twin = overrides.get(id(v)) or named.get(id(v))
        if twin is None:
            if len(v.shape) >= 2:
                raise AssertionError(
                    f"no PyTorch twin known for {kind} variable {v.path} "
                    f"{tuple(v.shape)}"
                )
            twin = vector  # biases, norm scales/offsets, PReLU alpha, ...
        out[id(v)] = (v, twin)
    return out


def model_twins(model):
    """`{id(variable): (variable, twin)}` for every trainable variable."""
    overrides = {}
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    # parents first: their overrides reach their sublayers' variables
    for layer in layers:
        layer_twins(layer, overrides)
    twins = {}
    for layer in layers:
        twins.update(layer_twins(layer, overrides))
    trainable = {id(v) for v in model.trainable_variables}
    missing = [v.path for v in model.trainable_variables if id(v) not in twins]
    assert not missing, f"variables of no layer: {missing}"
    return {k: twins[k] for k in trainable}


# --------------------------------------------------------------------- #
# The comparison through fit.
# --------------------------------------------------------------------- #


def make_sing(host, twins):
    """The optimizer under test: SING's defaults, nothing else. (`twins`,
    `{id(variable): (variable, twin)}` of the model that fit will build it
    with, is unused here; it lets a check of this oracle pass the exact axes
    explicitly instead.)"""
    del twins
    return keras_sing.SING(host, lookahead=False)


def _fit_one_step(model, optimizer, x, y, jit_compile):
    # metrics=[]: KerasHub tasks default to accuracy metrics
    model.compile(
        optimizer=optimizer, loss="mse", metrics=[], jit_compile=jit_compile
    )
    n = len(y)
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)


def _values(variables):
    return [to_numpy(v).astype(np.float64) for v in variables]


def _perturb_vectors(model, seed=7):
    """Random biases and norm scales/offsets (instead of 0 and 1).

    At init a LayerNorm's output has zero mean over features, so every kernel
    it feeds (attention q/k/v, MLP) gets a gradient whose fan-in mean is
    already zero, and centralizing it over (0,) or (0, 1) gives the same
    result: the test could not tell the rules apart. (The gradient INTO a
    LayerNorm keeps zero mean per row whatever its weights: for embedding
    tables read only through one, per-row and whole-table centralization are
    the same map.)"""
    rng = _rng(seed)
    for v in model.trainable_variables:
        if len(v.shape) <= 1:
            w = to_numpy(v)
            v.assign((w + 0.3 * rng.standard_normal(w.shape)).astype(w.dtype))


def sing_vs_oracle(build, x, y, expected=None, jit_compile=JIT):
    """Fits `build()` one step with SGD(LR) and a copy with SING(SGD(LR));
    returns a list of mismatch messages (empty when all variables agree).

    `expected(model) -> {id(variable): (variable, twin)}`, default: the
    walker `model_twins`."""
    expected = expected or model_twins
    ref = build()
    _perturb_vectors(ref)
    init = ref.get_weights()
    w0 = _values(ref.trainable_variables)
    _fit_one_step(ref, keras.optimizers.SGD(LR), x, y, jit_compile)
    grads = [(a - b) / LR for a, b in zip(w0, _values(ref.trainable_variables), strict=True)]

    model = build()
    model.set_weights(init)
    twins = expected(model)
    assert set(twins) == {id(v) for v in model.trainable_variables}
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    assert shapes == [g.shape for g in grads]
    _fit_one_step(
        model, make_sing(keras.optimizers.SGD(LR), twins), x, y, jit_compile
    )
    w1 = _values(model.trainable_variables)
    steps = [(a - b) / LR for a, b in zip(w0, w1, strict=True)]
    problems = []
    for v, g, step in zip(model.trainable_variables, grads, steps, strict=True):
        _, twin = twins[id(v)]
        assert np.any(g != 0), f"{v.path}: no gradient reached it"
        want = oracle(g, twin)
        atol = RTOL * float(np.max(np.abs(want)))
        if not np.allclose(step, want, rtol=RTOL, atol=atol):
            err = float(np.max(np.abs(step - want)))
            problems.append(
                f"{v.path} {tuple(v.shape)} twin={twin.__name__} "
                f"want axes {keras_axes(v.shape, twin)}: max|err|={err:.3g} "
                f"(max|want|={np.max(np.abs(want)):.3g})"
            )
    return problems


def check(build, x, y, expected=None, jit_compile=JIT):
    problems = sing_vs_oracle(build, x, y, expected, jit_compile)
    assert not problems, "\n".join(["SING != PyTorch twin:"] + problems)


# --------------------------------------------------------------------- #
# One case per row of the rule table.
# --------------------------------------------------------------------- #


def _rng(seed=0):
    return np.random.default_rng(seed)


def single_layer(make_layer, in_shape, n=4, int_input=None, seed=0):
    """(build, x, y): `Input(in_shape) -> make_layer()`, mse to a random
    target. `int_input=vocab` feeds token ids."""
    rng = _rng(seed)
    if int_input:
        x = rng.integers(0, int_input, size=(n,) + in_shape).astype("int32")
    else:
        x = rng.standard_normal((n,) + in_shape).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        inp = keras.Input(in_shape, dtype="int32" if int_input else "float32")
        return keras.Model(inp, make_layer()(inp))

    out_shape = build().output_shape[1:]
    y = rng.standard_normal((n,) + out_shape).astype("float32")
    return build, x, y


def by_attr(table):
    """`expected` for a one-layer case: `{layer name: {attribute: twin}}`."""

    def expected(model):
        out = {}
        for name, attrs in table.items():
            layer = model.get_layer(name)
            for attr, twin in attrs.items():
                v = _attr(layer, "_" + attr, attr)
                assert v is not None, (name, attr)
                out[id(v)] = (v, twin)
        return out

    return expected


def _mha_layer(model):
    return model.get_layer("mha")


def mha_expected(model):
    mha = _mha_layer(model)
    out = {}
    for sub, eq in (
        (mha._query_dense, "abc,cde->abde"),
        (mha._key_dense, "abc,cde->abde"),
        (mha._value_dense, "abc,cde->abde"),
        (mha._output_dense, "abcd,cde->abe"),
    ):
        # the twin is stated here, not read off the layer: guard the layout
        assert sub.equation == eq, (sub.name, sub.equation)
        out[id(sub.kernel)] = (sub.kernel, einsum(eq))
        out[id(sub.bias)] = (sub.bias, vector)
    return out


L = keras.layers


def _with_lora(make_layer, in_shape, rank=2):
    """`make_layer`'s layer, built, with LoRA on (its kernel frozen); `B`
    random, so that `A` gets a gradient (Keras starts `B` at zero)."""

    def make():
        layer = make_layer()
        layer.build((None,) + in_shape)
        layer.enable_lora(rank, b_initializer="glorot_uniform")
        return layer

    return make


def _lora(a_twin, **others):
    """A LoRA layer's trainable variables: `A`, `B` `(rank, out)` (a Linear
    from rank to out, as peft's `lora_B`), and the `others` given."""
    b = "lora_embeddings_b" if a_twin is None else "lora_kernel_b"
    a = {"lora_embeddings_a": linear} if a_twin is None else {"lora_kernel_a": a_twin}
    return {"t": {**a, b: linear, **others}}


def _case(name, make_layer, in_shape, table, **kw):
    return pytest.param(name, make_layer, in_shape, table, kw, id=name)


def _kb(twin):
    return {"t": {"kernel": twin, "bias": vector}}


LAYER_CASES = [
    _case("dense", lambda: L.Dense(5, name="t"), (6,), _kb(linear)),
    _case("conv1d", lambda: L.Conv1D(4, 3, name="t"), (7, 3), _kb(conv)),
    _case(
        "conv2d", lambda: L.Conv2D(4, (3, 2), name="t"), (6, 5, 3), _kb(conv)
    ),
    _case("conv3d", lambda: L.Conv3D(3, 2, name="t"), (4, 4, 3, 2), _kb(conv)),
    _case(
        "conv2d_groups2",
        lambda: L.Conv2D(6, 3, groups=2, name="t"),
        (5, 5, 4),
        _kb(conv),
    ),
    _case(
        "conv1d_transpose",
        lambda: L.Conv1DTranspose(4, 3, name="t"),
        (5, 3),
        _kb(conv_transpose),
    ),
    _case(
        "conv2d_transpose",
        lambda: L.Conv2DTranspose(4, (2, 3), strides=2, name="t"),
        (3, 3, 2),
        _kb(conv_transpose),
    ),
    _case(
        "conv3d_transpose",
        lambda: L.Conv3DTranspose(2, 2, name="t"),
        (3, 3, 2, 3),
        _kb(conv_transpose),
    ),
    _case(
        "depthwise_conv1d",
        lambda: L.DepthwiseConv1D(3, depth_multiplier=2, name="t"),
        (7, 3),
        _kb(depthwise),
    ),
    _case(
        "depthwise_conv2d_mult2",
        lambda: L.DepthwiseConv2D((3, 2), depth_multiplier=2, name="t"),
        (6, 5, 3),
        _kb(depthwise),
    ),
    _case(
        "separable_conv1d",
        lambda: L.SeparableConv1D(4, 3, depth_multiplier=2, name="t"),
        (7, 3),
        {"t": {"depthwise_kernel": depthwise, "pointwise_kernel": conv,
               "bias": vector}},
    ),
    _case(
        "separable_conv2d",
        lambda: L.SeparableConv2D(5, (3, 2), depth_multiplier=2, name="t"),
        (6, 5, 3),
        {"t": {"depthwise_kernel": depthwise, "pointwise_kernel": conv,
               "bias": vector}},
    ),
    _case(
        "embedding",
        lambda: L.Embedding(7, 5, name="t"),
        (6,),
        {"t": {"embeddings": embedding}},
        int_input=7,
    ),
    _case(
        "multi_head_attention",
        None,  # built below: self-attention needs two inputs
        (5, 6),
        "mha",
    ),
    _case(
        "einsum_dense_3d_kernel",
        lambda: L.EinsumDense(
            "ab,bcd->acd", output_shape=(2, 3), bias_axes="cd", name="t"
        ),
        (5,),
        {"t": {"kernel": einsum("ab,bcd->acd"), "bias": vector}},
    ),
    _case(
        "einsum_dense_inner_fan_in",
        lambda: L.EinsumDense(
            "abc,dce->abde", output_shape=(3, 2, 5), bias_axes="de", name="t"
        ),
        (3, 4),
        {"t": {"kernel": einsum("abc,dce->abde"), "bias": vector}},
    ),
    # LoRA (`enable_lora`): the input meets `A` where it met the kernel, so
    # `A`'s fan-in is the kernel's contracted axes (per head and rank for an
    # attention query, as the twin `einsum` with `rank` in the kernel's last
    # place says); `B` is a Linear from rank to the kernel's last axis.
    _case(
        "dense_lora",
        _with_lora(lambda: L.Dense(5, name="t"), (6,)),
        (6,),
        _lora(linear, bias=vector),
    ),
    _case(
        "conv2d_lora",
        _with_lora(lambda: L.Conv2D(4, (3, 2), name="t"), (6, 5, 3)),
        (6, 5, 3),
        _lora(conv, bias=vector),
    ),
    _case(
        "embedding_lora",  # peft: lora_embedding_A (r, vocab), B (dim, r)
        _with_lora(lambda: L.Embedding(7, 5, name="t"), (6,)),
        (6,),
        _lora(None),
        int_input=7,
    ),
    _case(
        "einsum_dense_lora_query",  # MultiHeadAttention's q/k/v equation
        _with_lora(lambda: L.EinsumDense(
            "abc,cde->abde", output_shape=(5, 2, 3), bias_axes="de", name="t"
        ), (5, 4)),
        (5, 4),
        _lora(einsum("abc,cdr->abdr"), bias=vector),
    ),
    _case(
        "einsum_dense_lora_output",  # MultiHeadAttention's output equation
        _with_lora(lambda: L.EinsumDense(
            "abcd,cde->abe", output_shape=(5, 6), bias_axes="e", name="t"
        ), (5, 2, 3)),
        (5, 2, 3),
        _lora(einsum("abcd,cdr->abr"), bias=vector),
    ),
    _case(
        "einsum_dense_lora_inner_fan_in",  # e.g. Gemma's query "btd,ndh->btnh"
        _with_lora(lambda: L.EinsumDense(
            "abc,dce->abde", output_shape=(2, 3, 5), bias_axes="de", name="t"
        ), (2, 4)),
        (2, 4),
        _lora(einsum("abc,dcr->abdr"), bias=vector),
    ),
    _case(
        "layer_normalization",
        lambda: L.LayerNormalization(name="t"),
        (3, 5),
        {"t": {"gamma": vector, "beta": vector}},
    ),
    _case(
        "layer_normalization_over_two_axes",  # torch LayerNorm((3, 5))
        lambda: L.LayerNormalization(axis=[-2, -1], name="t"),
        (3, 5),
        {"t": {"gamma": parameter, "beta": parameter}},
    ),
    _case(
        "rms_normalization_over_two_axes",  # torch RMSNorm((3, 5))
        lambda: L.RMSNormalization(axis=[-2, -1], name="t"),
        (3, 5),
        {"t": {"scale": parameter}},
    ),
    _case(
        "batch_normalization",
        lambda: L.BatchNormalization(name="t"),
        (4, 3),
        {"t": {"gamma": vector, "beta": vector}},
    ),
    _case(
        "group_normalization",
        lambda: L.GroupNormalization(groups=2, name="t"),
        (3, 4),
        {"t": {"gamma": vector, "beta": vector}},
    ),
    _case(
        "prelu",
        lambda: L.PReLU(name="t"),  # alpha (4, 3): 1-D num_parameters in torch
        (4, 3),
        {"t": {"alpha": vector}},
    ),
    _case(
        "dense_fan_in_1",  # torch (out, 1): normalization only
        lambda: L.Dense(5, name="fanin1"),
        (1,),
        {"fanin1": {"kernel": linear, "bias": vector}},
    ),
]


def mha_case(n=4, seq=5, dim=6):
    rng = _rng(0)
    x = rng.standard_normal((n, seq, dim)).astype("float32")
    y = rng.standard_normal((n, seq, dim)).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        inp = keras.Input((seq, dim))
        out = L.MultiHeadAttention(2, 3, name="mha")(inp, inp)
        return keras.Model(inp, out)

    return build, x, y


def _layer_case(make_layer, in_shape, table, kw):
    if table == "mha":
        build, x, y = mha_case(seq=in_shape[0], dim=in_shape[1])
        return build, x, y, mha_expected
    build, x, y = single_layer(make_layer, in_shape, **kw)
    return build, x, y, by_attr(table)


@pytest.mark.parametrize("name,make_layer,in_shape,table,kw", LAYER_CASES)
def test_layer_rule_through_fit(name, make_layer, in_shape, table, kw):
    """Each row of the rule table, through compile + fit, SING's defaults."""
    build, x, y, expected = _layer_case(make_layer, in_shape, table, kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fan-in-1 warning: tested below
        check(build, x, y, expected)


def test_fan_in_1_warns_with_the_variable_path():
    """A fan-in of size 1 would centralize to exactly zero: SING skips (1)
    for it (checked above) and warns, naming the variable."""
    build, x, y = single_layer(lambda: L.Dense(5, name="fanin1"), (1,))
    model = build()
    with pytest.warns(UserWarning, match=r"fanin1/kernel"):
        _fit_one_step(
            model, keras_sing.SING(keras.optimizers.SGD(LR), lookahead=False),
            x, y, JIT,
        )


# --------------------------------------------------------------------- #
# Self-checks of the oracle (NumPy only).
# --------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "twin,shape,axes",
    [
        (linear, (6, 5), (0,)),
        (linear, (1, 5), None),
        (conv, (3, 2, 4, 5), (0, 1, 2)),
        (conv_transpose, (3, 2, 5, 4), (0, 1, 2)),
        (depthwise, (3, 2, 4, 2), (0, 1)),
        (depthwise, (1, 1, 4, 2), None),
        (embedding, (7, 5), (1,)),
        (reverse_embedding, (5, 7), (0,)),
        (einsum("abc,cde->abde"), (6, 2, 3), (0,)),
        (einsum("abcd,cde->abe"), (2, 3, 6), (0, 1)),
        (einsum("abc,dce->abde"), (2, 4, 5), (1,)),
        (vector, (2, 3), None),
        (parameter, (1, 1, 8), (2,)),  # size-1 axes: any
        (batched_parameter, (5, 8), (0, 1)),
    ],
    ids=lambda p: getattr(p, "__name__", None),
)
def test_oracle_twin_axes(twin, shape, axes):
    """Each twin, mapped back, is an axis-aligned centralization over
    `axes` in Keras layout, and the torch-layout oracle equals the Keras-layout
    statement of it."""
    assert keras_axes(shape, twin) == axes
    g = _rng(3).standard_normal(shape)
    c = g - g.mean(axis=axes, keepdims=True) if axes else g
    np.testing.assert_allclose(oracle(g, twin), c / (np.linalg.norm(c) + EPS))


def test_oracle_depthwise_channel_order():
    """Depthwise twin: torch output channel i*mult + m is Keras [..., i, m]."""
    g = _rng(4).standard_normal((3, 2, 4, 2))
    t, back = depthwise(g)
    assert t.shape == (8, 1, 3, 2)
    np.testing.assert_array_equal(t[2 * 2 + 1, 0], g[:, :, 2, 1])
    np.testing.assert_array_equal(back(t), g)


# --------------------------------------------------------------------- #
# Whole models.
# --------------------------------------------------------------------- #


def _hub():
    return pytest.importorskip("keras_hub")


def vit_case(n=2):
    hub = _hub()
    rng = _rng(0)
    x = rng.standard_normal((n, 32, 32, 3)).astype("float32")
    y = rng.standard_normal((n, 10)).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        bb = hub.models.ViTBackbone(
            image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
            hidden_dim=32, mlp_dim=64, dropout_rate=0.0,
            attention_dropout=0.0,
        )
        return hub.models.ViTImageClassifier(
            backbone=bb, num_classes=10, preprocessor=None, dropout=0.0
        )

    return build, x, y


def bert_case(n=4, seq=8, vocab=20):
    hub = _hub()
    rng = _rng(0)
    x = {
        "token_ids": rng.integers(0, vocab, size=(n, seq)).astype("int32"),
        "segment_ids": rng.integers(0, 2, size=(n, seq)).astype("int32"),
        "padding_mask": np.ones((n, seq), "int32"),
    }
    x["padding_mask"][:, -2:] = 0
    y = rng.standard_normal((n, 2)).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        bb = hub.models.BertBackbone(
            vocabulary_size=vocab, num_layers=2, num_heads=2, hidden_dim=64,
            intermediate_dim=128, max_sequence_length=32, dropout=0.0,
        )
        return hub.models.BertTextClassifier(
            backbone=bb, num_classes=2, preprocessor=None, dropout=0.0
        )

    return build, x, y


def bert_lora_case(n=4):
    """`bert_case` fine-tuned with LoRA as KerasHub does it
    (`backbone.enable_lora`: rank-2 factors on every query and value
    `EinsumDense`, the rest of the backbone frozen), `B` random so that `A`
    gets a gradient, and the norms perturbed before they are frozen (see
    `_perturb_vectors`)."""
    build_bert, x, y = bert_case(n)

    def build():
        model = build_bert()
        _perturb_vectors(model)  # the norms feeding q/v: frozen below
        model.backbone.enable_lora(2)
        rng = _rng(2)
        lora_b = [v for v in model.trainable_variables if v.name == "lora_kernel_b"]
        assert lora_b
        for v in lora_b:
            v.assign(0.3 * rng.standard_normal(v.shape).astype("float32"))
        return model

    return build, x, y


def resnet_case(n=2):
    hub = _hub()
    rng = _rng(0)
    x = rng.standard_normal((n, 32, 32, 3)).astype("float32")
    y = rng.standard_normal((n, 10)).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        bb = hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[3],
            stackwise_num_filters=[64, 64], stackwise_num_blocks=[1, 1],
            stackwise_num_strides=[1, 2], block_type="basic_block",
            use_pre_activation=False, image_shape=(32, 32, 3),
        )
        return hub.models.ResNetImageClassifier(
            backbone=bb, num_classes=10, preprocessor=None
        )

    return build, x, y


def mobilenet_case(n=2):
    """Two MobileNetV2 inverted-residual blocks (expand 1x1, depthwise 3x3,
    project 1x1, BatchNorm everywhere), one with depth_multiplier 2."""
    rng = _rng(0)
    x = rng.standard_normal((n, 16, 16, 3)).astype("float32")
    y = rng.standard_normal((n, 10)).astype("float32")

    def block(h, i, expand, out, stride, mult=1):
        c = h.shape[-1]
        r = h
        h = L.Conv2D(c * expand, 1, use_bias=False, name=f"b{i}_expand")(h)
        h = L.BatchNormalization(name=f"b{i}_expand_bn")(h)
        h = L.ReLU(6.0)(h)
        h = L.DepthwiseConv2D(
            3, strides=stride, depth_multiplier=mult, padding="same",
            use_bias=False, name=f"b{i}_depthwise",
        )(h)
        h = L.BatchNormalization(name=f"b{i}_depthwise_bn")(h)
        h = L.ReLU(6.0)(h)
        h = L.Conv2D(out, 1, use_bias=False, name=f"b{i}_project")(h)
        h = L.BatchNormalization(name=f"b{i}_project_bn")(h)
        return L.Add()([r, h]) if stride == 1 and out == c else h

    def build():
        keras.utils.set_random_seed(1)
        inp = keras.Input((16, 16, 3))
        h = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False,
                     name="stem")(inp)
        h = L.BatchNormalization(name="stem_bn")(h)
        h = L.ReLU(6.0)(h)
        h = block(h, 1, 2, 8, 1)
        h = block(h, 2, 2, 12, 2, mult=2)
        h = L.GlobalAveragePooling2D()(h)
        return keras.Model(inp, L.Dense(10, name="head")(h))

    return build, x, y


def mixed_case(n=2):
    """Conv, depthwise (mult 2), separable, MHA, EinsumDense, norms, PReLU."""
    rng = _rng(0)
    x = rng.standard_normal((n, 8, 8, 3)).astype("float32")
    y = rng.standard_normal((n, 4)).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        inp = keras.Input((8, 8, 3))
        h = L.Conv2D(4, 3, padding="same", name="stem")(inp)
        h = L.BatchNormalization(name="bn")(h)
        h = L.DepthwiseConv2D(
            3, depth_multiplier=2, padding="same", name="dw"
        )(h)
        h = L.SeparableConv2D(6, 3, strides=2, padding="same", name="sep")(h)
        h = L.PReLU(name="prelu")(h)
        t = L.Reshape((16, 6))(h)
        t = L.MultiHeadAttention(2, 3, name="mha")(t, t)
        t = L.LayerNormalization(name="ln")(t)
        t = L.EinsumDense("abc,cd->abd", output_shape=(None, 5), name="ed")(t)
        t = L.GlobalAveragePooling1D()(t)
        return keras.Model(inp, L.Dense(4, name="head")(t))

    return build, x, y


def shared_layer_case(n=3):
    """Layers called by the model and, shared, by a sub-model listed after
    them: each variable is still its own layer's (an `EinsumDense` whose
    kernel `(out, in)` has its fan-in on axis 1, a depthwise kernel)."""
    rng = _rng(0)
    x = rng.standard_normal((n, 5, 5, 3)).astype("float32")
    y = rng.standard_normal((n, 4)).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        dw = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")
        ein = L.EinsumDense("ab,cb->ac", output_shape=(4,), name="ein")
        inp = keras.Input((5, 5, 3))
        sub = keras.Sequential(
            [keras.Input((5, 5, 3)), dw, L.Flatten(), L.Dense(5), ein],
            name="sub",
        )
        h = L.Flatten()(dw(inp))
        own = ein(L.Dense(5, name="to5")(h))
        return keras.Model(inp, L.Add()([own, sub(inp)]))

    return build, x, y


WHOLE_MODELS = {
    # a recurrent layer's weights live in its cell
    "gru": lambda: single_layer(lambda: L.GRU(4, name="t"), (4, 3)),
    "gru_reset_before": lambda: single_layer(
        lambda: L.GRU(4, reset_after=False, name="t"), (4, 3)
    ),
    "lstm": lambda: single_layer(lambda: L.LSTM(4, name="t"), (4, 3)),
    "simple_rnn": lambda: single_layer(lambda: L.SimpleRNN(4, name="t"), (4, 3)),
    "bidirectional_gru": lambda: single_layer(
        lambda: L.Bidirectional(L.GRU(3), name="t"), (4, 3)
    ),
    "shared_layer": shared_layer_case,
    "vit": vit_case,
    "bert": bert_case,
    "bert_lora": bert_lora_case,
    "resnet": resnet_case,
    "mobilenet_v2_blocks": mobilenet_case,
    "mixed_mha_depthwise": mixed_case,
}


@pytest.mark.parametrize("name", sorted(WHOLE_MODELS))
def test_whole_model_through_fit(name):
    """Every trainable variable of a whole model, its layer found by the
    walker, against its twin."""
    build, x, y = WHOLE_MODELS[name]()
    check(build, x, y)


@pytest.mark.skipif(
    BACKEND == "torch", reason="torch.compile costs minutes on a CI core"
)
def test_mixed_model_jit_compiled():
    build, x, y = mixed_case()
    check(build, x, y, jit_compile=True)


def test_walker_agrees_with_the_layer_table():
    """The walker gives each one-layer case the twin its row states."""
    for param in LAYER_CASES:
        name, make_layer, in_shape, table, kw = param.values
        build, x, y, expected = _layer_case(make_layer, in_shape, table, kw)
        model = build()
        want = {k: t.__name__ for k, (_, t) in expected(model).items()}
        got = {k: t.__name__ for k, (_, t) in model_twins(model).items()}
        assert got == want, name


# --------------------------------------------------------------------- #
# Custom loop: no model visible to SING.
# --------------------------------------------------------------------- #


def _custom_loop(opt, model, seed=5):
    rng = _rng(seed)
    variables = model.trainable_variables
    grads = [rng.standard_normal(v.shape).astype("float32") for v in variables]
    w0 = _values(variables)
    opt.apply_gradients(
        zip([keras.ops.convert_to_tensor(g) for g in grads], variables, strict=True)
    )
    steps = [(a - b) / LR for a, b in zip(w0, _values(variables), strict=True)]
    return grads, steps


def test_custom_loop_with_fan_in_axes_is_exact():
    build, _, _ = mha_case()
    model = build()
    twins = mha_expected(model)
    opt = keras_sing.SING(
        keras.optimizers.SGD(LR), lookahead=False,
        centralize_axes=keras_sing.fan_in_axes(model),
    )
    grads, steps = _custom_loop(opt, model)
    for v, g, step in zip(model.trainable_variables, grads, steps, strict=True):
        want = oracle(g, twins[id(v)][1])
        np.testing.assert_allclose(
            step, want, rtol=RTOL, atol=RTOL * np.max(np.abs(want)),
            err_msg=v.path,
        )


def test_custom_loop_without_a_model_warns_about_ambiguous_variables():
    build, _, _ = mha_case()
    model = build()
    opt = keras_sing.SING(keras.optimizers.SGD(LR), lookahead=False)
    with pytest.warns(UserWarning) as record:
        _custom_loop(opt, model)
    text = "\n".join(str(w.message) for w in record)
    assert "mha/query/kernel" in text, text


def test_custom_loop_warns_about_two_axis_normalization_scales():
    """A LayerNormalization over two axes: its (3, 5) scale and offset are
    centralized per row, where the rank-and-name guess would take all axes
    but the last; without `fan_in_axes(model)`, SING says so."""
    model = single_layer(
        lambda: L.LayerNormalization(axis=[-2, -1], name="t"), (3, 5)
    )[0]()
    opt = keras_sing.SING(keras.optimizers.SGD(LR), lookahead=False)
    with pytest.warns(UserWarning) as record:
        _custom_loop(opt, model)
    text = "\n".join(str(w.message) for w in record)
    assert "t/gamma" in text and "t/beta" in text, text


def test_conv_lstm_cells_weights_are_convolutions_without_a_guess():
    """ConvLSTM's weights belong to its (unexported) `ConvLSTMCell`: kernel
    `(*k, in, 4 filters)` and recurrent kernel `(*k, filters, 4 filters)`
    are convolutions (one mean per output channel, as for LSTM's separate
    input and hidden weights), the bias 1-D. SING knows the cell, so `fit`
    neither guesses nor warns."""
    build, x, y = single_layer(lambda: L.ConvLSTM2D(2, 3, padding="same", name="t"), (2, 4, 4, 3))

    def expected(model):
        cell = model.get_layer("t").cell
        return {
            id(cell.kernel): (cell.kernel, conv),
            id(cell.recurrent_kernel): (cell.recurrent_kernel, conv),
            id(cell.bias): (cell.bias, vector),
        }

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        check(build, x, y, expected)
    assert not [str(w.message) for w in record if "SING" in str(w.message)]


def test_unknown_layer_in_a_model_warns_as_such():
    """A custom layer's kernel, in a model that built SING: the warning
    says SING has no rule for the layer (not that no model built it)."""

    class Scale(keras.layers.Layer):
        def build(self, shape):  # rank 3: its fan-in is not certain
            self.w = self.add_weight(shape=(2, shape[-1], 3), name="w")

        def call(self, x):
            return keras.ops.einsum("bi,kio->bo", x, self.w)

    inp = keras.Input((4,))
    model = keras.Model(inp, Scale(name="scale")(inp))
    model.compile(keras_sing.SING(keras.optimizers.SGD(0.1)), "mse")
    with pytest.warns(UserWarning, match=r"no fan-in rule.*scale/w.*centralize_axes") as record:
        model.fit(np.ones((2, 4), "float32"), np.ones((2, 3), "float32"), verbose=0)
    assert not any("custom loop" in str(w.message) for w in record)


@pytest.mark.skipif(
    BACKEND != "torch",
    reason="TorchModuleWrapper wraps torch modules: torch backend only",
)
def test_torch_module_wrapper_parameters_are_in_torch_layout():
    """A `TorchModuleWrapper`'s variables are its module's parameters, in
    PyTorch layout: nn.Linear's weight (out, in) and nn.Conv1d's (out, in,
    k) are centralized over dims 1.., as the published optimizer does."""
    import torch

    rng = _rng(0)
    x = rng.standard_normal((3, 3, 7)).astype("float32")  # (N, C, L)
    y = rng.standard_normal((3, 5)).astype("float32")

    def build():
        keras.utils.set_random_seed(1)
        torch.manual_seed(1)
        conv = torch.nn.Sequential(torch.nn.Conv1d(3, 2, 2), torch.nn.Flatten())
        model = keras.Sequential([
            L.TorchModuleWrapper(conv, output_shape=(None, 12), name="conv"),
            L.TorchModuleWrapper(
                torch.nn.Linear(12, 5), output_shape=(None, 5), name="linear"
            ),
        ])
        model.build((None, 3, 7))
        return model

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        check(build, x, y)
    assert not [str(w.message) for w in record if "SING" in str(w.message)]


def _experts_linear(g):
    """Stacked experts (E, in, out) -> one nn.Linear per expert, weight
    (out, in), stacked as (E * out, in) (the axes only: torch would
    normalize each expert's weight on its own)."""
    e, i, o = g.shape
    t = np.transpose(g, (0, 2, 1)).reshape(e * o, i)
    return t, lambda t: np.transpose(t.reshape(e, o, i), (0, 2, 1))


def _depthwise_conv1d(g):
    """(C, K) -> nn.Conv1d(C, C, K, groups=C).weight (C, 1, K)."""
    return g[:, None], lambda t: t[:, 0]


def _masked_lm_head(hub):
    """KerasHub's `MaskedLMHead` without a `token_embedding`: its own
    output kernel `(D, vocab)`."""
    inputs = keras.Input((4, 8))
    positions = keras.Input((2,), dtype="int32")
    head = hub.layers.MaskedLMHead(vocabulary_size=11, name="head")
    return keras.Model([inputs, positions], head(inputs, positions))


def _hub_backbones():
    hub = _hub()
    m = hub.models
    tiny = dict(vocabulary_size=50, num_layers=1, num_query_heads=2,
                num_key_value_heads=1, hidden_dim=8, intermediate_dim=8)
    # Qwen's gate is gate_proj and up_proj side by side (E, D, 2I)
    experts = {
        "expert_feedforward_gate_dense": _experts_linear,
        "expert_feedforward_output_dense": _experts_linear,
    }
    return {
        "gpt_oss": (  # HF: one 3-D Parameter per kind, 2-D biases
            lambda: m.GptOssBackbone(num_experts=3, top_k=2, **tiny),
            {"gate_up_proj": parameter, "down_proj": parameter,
             "gate_up_proj_bias": parameter, "down_proj_bias": parameter},
        ),
        "qwen_moe": (  # HF: one nn.Linear per expert (KerasHub's converter)
            lambda: m.QwenMoeBackbone(
                moe_intermediate_dim=8, shared_expert_intermediate_dim=8,
                num_experts=2, **tiny),
            experts,
        ),
        "qwen3_moe": (
            lambda: m.Qwen3MoeBackbone(
                head_dim=4, moe_intermediate_dim=8, num_experts=2, top_k=1,
                **tiny),
            experts,
        ),
        "mixtral": (
            lambda: m.MixtralBackbone(num_experts=2, top_k=1, **tiny),
            {**experts,
             "expert_feedforward_intermediate_dense": _experts_linear},
        ),
        "qwen3_5_linear_attention": (
            lambda: m.Qwen3_5Backbone(
                head_dim=4, layer_types=["linear_attention"],
                linear_num_key_heads=2, linear_num_value_heads=2,
                linear_key_head_dim=4, linear_value_head_dim=4, **tiny),
            {"conv1d_kernel": _depthwise_conv1d},
        ),
        "masked_lm_head_untied": (  # an lm head nn.Linear(D, vocab)
            lambda: _masked_lm_head(hub),
            {"output_kernel": linear},
        ),
        "deit": (  # HF: nn.Parameter (1, 1, D) tokens, (1, S, D) positions
            lambda: m.DeiTBackbone(
                image_shape=(8, 8, 3), patch_size=4, num_layers=1,
                num_heads=2, hidden_dim=8, intermediate_dim=16),
            {"class_token": parameter, "distillation_token": parameter,
             "position_embedding": parameter},
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["gpt_oss", "qwen_moe", "qwen3_moe", "mixtral", "qwen3_5_linear_attention",
     "masked_lm_head_untied", "deit"],
)
def test_kerashub_layer_rules_follow_their_twins(name):
    """KerasHub layers with weights of their own (not a stock Keras
    layer's): the axes `fit` would use (`fan_in_axes(model)`, the same
    rules) are those of the twin tensor each variable is converted from."""
    make, twins = _hub_backbones()[name]
    model = make()
    axes = keras_sing.fan_in_axes(model)
    seen = set()
    for v in model.trainable_variables:
        if v.name not in twins:
            continue
        seen.add(v.name)
        got = axes.get("^" + re.escape(v.path) + "$", "no rule")
        assert got != "no rule", v.path
        # axes of size 1 change nothing: (1, 2) on (1, 1, D) is (2,)
        got = tuple(a for a in got or () if v.shape[a] > 1) or None
        assert got == keras_axes(v.shape, twins[v.name]), (v.path, got)
    assert seen == set(twins), seen


def test_custom_layer_tables_of_rank_two_warn():
    """A custom layer's 2-D weight not named as a Keras linear map (a
    lookup table here) gets the guess, with a warning naming it; its 2-D
    `kernel` gets the guess silently (an `(in, out)` map)."""

    class Lookup(keras.layers.Layer):
        def build(self, shape):
            self.table = self.add_weight(shape=(7, 5), name="table")
            self.kernel = self.add_weight(shape=(5, 3), name="kernel")

        def call(self, ids):
            rows = keras.ops.take(self.table, ids, axis=0)
            return keras.ops.matmul(keras.ops.mean(rows, axis=1), self.kernel)

    inp = keras.Input((4,), dtype="int32")
    model = keras.Model(inp, Lookup(name="lookup")(inp))
    model.compile(keras_sing.SING(keras.optimizers.SGD(0.1)), "mse")
    ids = np.array([[0, 1, 2, 3], [4, 5, 6, 0]], "int32")
    with pytest.warns(UserWarning, match=r"lookup/table") as record:
        model.fit(ids, np.ones((2, 3), "float32"), verbose=0)
    text = "\n".join(str(w.message) for w in record)
    assert "lookup/kernel" not in text, text


def test_axes_from_a_callable_may_be_numpy():
    kernel = keras.Variable(np.ones((3, 2, 4), "float32"), name="kernel")
    opt = keras_sing.SING(centralize_axes=lambda v: np.array([0, 1]))
    opt.build([kernel])
    assert opt._plans[0][1] == (0, 1)
