"""SING's per-tensor math on `keras.ops`: one small function per equation.

Every function takes one tensor and returns one tensor; none of them holds
state or branches in Python on a tensor value, so all of them trace under
`tf.function`, XLA, `jax.jit` and torch alike. Reference: Courtois et al.,
[SING: A Plug-and-Play DNN Learning Technique](
https://arxiv.org/abs/2305.15997), 2023.
"""

from keras import backend
from keras import ops

from keras_sing import backend as backend_lib

_LOW_PRECISION = ("float16", "bfloat16")


def compute_dtype(dtype):
    """The dtype SING computes in for a tensor of `dtype`.

    Reductions over a whole tensor lose too much in float16/bfloat16 (the
    sum of squares of a float16 tensor overflows at 256), so those are
    promoted to float32; every other dtype is kept.
    """
    dtype = backend.standardize_dtype(dtype)
    return "float32" if dtype in _LOW_PRECISION else dtype


def centralize(gradient, axes):
    """Gradient centralization: subtract the mean over the fan-in `axes`.

    Update rule:
        g <- g - mean(g, axes)          (one mean per output unit)

    Keras layout puts the output axis last (`Dense` kernel `(in, out)`,
    `Conv2D` kernel `(kh, kw, in, out)`), so the usual `axes` are all but the
    last; PyTorch and the published code keep axis 0 instead. `axes=None` or
    `()` returns `gradient` unchanged.

    Reference: Yong et al., [Gradient Centralization](
    https://arxiv.org/abs/2004.01461), 2020.
    """
    if not axes:
        return gradient
    # g <- g - mean(g, axes)
    return ops.subtract(gradient, unit_mean(gradient, axes))


def unit_mean(gradient, axes):
    """`mean(gradient, axes)`, keeping dims, computed as `g0 + mean(g - g0)`.

    `g0` is each unit's first element (the same mean in exact arithmetic):
    a constant unit then centralizes to exactly 0, leaving no rounding
    residue for the normalization to blow up to unit norm. Written so that
    compilers fuse the shift into the reduction instead of materializing
    `g - g0`.
    """
    ndim = len(gradient.shape)
    axes = tuple(sorted(a % ndim for a in axes))
    first = tuple(slice(0, 1) if i in axes else slice(None) for i in range(ndim))
    g0 = gradient[first]
    return ops.add(g0, ops.mean(ops.subtract(gradient, g0), axis=axes, keepdims=True))


# Below this, float32 squares have gone subnormal (elements < ~1e-15).
_SMALLEST_SAFE_SUM_OF_SQUARES = 1e-30


def l2_norm(x):
    """The L2 (Frobenius) norm of the whole tensor, safe at any scale.

    `sqrt(sum(x^2))`, one reduction, when that sum is finite and not
    subnormal; otherwise (|x| ~ 1e30 overflows it in float32, |x| ~ 1e-30
    underflows it, and an all-zero `x`) the scaled form `s * ||x / s||` with
    `s = max|x|`. The choice is a `cond` on a scalar, so compiled code runs
    only one branch. An all-zero `x` gives 0.
    """
    return _l2_norm_of(lambda: x)


def _l2_norm_of(make_x):
    """`l2_norm(make_x())`, with `make_x` called again inside the fallback
    branch: compiled, the branch then takes `make_x`'s inputs (the gradient
    and its mean) rather than `x` itself, which would be materialized as
    the `cond`'s operand (one more write and read of the whole tensor)."""
    sum_of_squares = ops.sum(ops.square(make_x()))
    plain = ops.logical_and(
        ops.isfinite(sum_of_squares),
        ops.greater_equal(sum_of_squares, _SMALLEST_SAFE_SUM_OF_SQUARES),
    )
    return backend_lib.cond(
        plain, lambda: ops.sqrt(sum_of_squares), lambda: scaled_l2_norm(make_x())
    )


def scaled_l2_norm(x):
    """`||x||_2` as `s * ||x / s||`, `s = max|x|`: no overflow, no underflow."""
    # s = max |x|
    scale = ops.max(ops.abs(x))
    safe_scale = ops.where(ops.greater(scale, 0), scale, ops.ones_like(scale))
    # ||x|| = s * sqrt(sum((x / s)^2))
    return scale * ops.sqrt(ops.sum(ops.square(ops.divide(x, safe_scale))))


def normalize(gradient, epsilon):
    """Gradient normalization by the L2 norm of the whole tensor.

    Update rule:
        g <- g / (||g||_2 + epsilon)

    An all-zero gradient stays all-zero (never NaN), and a positive rescaling
    `c * g` gives the same result as long as `c * ||g|| >> epsilon`.
    """
    # g <- g / (||g|| + eps)
    return ops.divide(gradient, l2_norm(gradient) + epsilon)


def standardize(gradient, axes, epsilon, *, centralize_=True, normalize_=True):
    """SING's gradient standardization (SPEC section 1): centralize, normalize.

    Update rule:
        g <- g - mean(g, axes)           if centralize_ and axes
        g <- g / (||g||_2 + epsilon)     if normalize_

    Computed in float32 for float16/bfloat16 gradients and returned in the
    gradient's dtype. Empty tensors are returned unchanged.
    """
    return standardize_with_norm(
        gradient, axes, epsilon, centralize_=centralize_, normalize_=normalize_
    )[0]


def standardize_with_norm(
    gradient, axes, epsilon, *, centralize_=True, normalize_=True
):
    """`standardize`, also returning `||g||_2` of the centralized gradient
    (the norm it divides by, float32 or wider), which SING records."""
    dtype = backend.standardize_dtype(gradient.dtype)
    if 0 in tuple(gradient.shape):
        return gradient, ops.zeros((), compute_dtype(dtype))
    g = ops.cast(gradient, compute_dtype(dtype))
    if centralize_ and axes:
        mean = unit_mean(g, axes)

        def centered():
            # g <- g - mean(g, axes)
            return ops.subtract(g, mean)

    else:

        def centered():
            return g

    norm = _l2_norm_of(centered)
    g = centered()
    if normalize_:
        # g <- g / (||g|| + eps)
        g = ops.divide(g, norm + epsilon)
    return ops.cast(g, dtype), norm


def softplus_calibrate(denominator, beta):
    """Softplus calibration of Adam's denominator (SAdam).

    Update rule:
        d <- softplus(beta * d) / beta = log(1 + exp(beta * d)) / beta

    It replaces Adam's `d + epsilon`: `d` is kept where `beta * d >> 1` and
    floored at `log(2) / beta` near zero (0.0139 for `beta = 50`).

    Reference: Tong et al., [Calibrating the Adaptive Learning Rate to
    Improve Convergence of ADAM](https://arxiv.org/abs/1908.00700), 2019.
    """
    # d <- softplus(beta * d) / beta
    return ops.divide(ops.softplus(ops.multiply(denominator, beta)), beta)


def lookahead_merge(fast, slow, alpha):
    """LookAhead's synchronization of the fast weights with the slow copy.

    Update rule:
        W <- alpha * W + (1 - alpha) * S = S + alpha * (W - S)

    after which the caller sets `S <- W`. `alpha = 1` keeps the fast weights.

    Reference: Zhang et al., [Lookahead Optimizer: k steps forward, 1 step
    back](https://arxiv.org/abs/1907.08610), 2019.
    """
    # W <- S + alpha * (W - S)
    return ops.add(slow, ops.multiply(ops.subtract(fast, slow), alpha))
