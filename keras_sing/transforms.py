"""SING's math on `keras.ops`: one small function per equation.

This module is keras_sing's one statement of the algorithm
(docs/algorithm.md maps each equation to its function here). Every function
takes and returns values, never variables; none holds state or branches in
Python on a tensor value, so all of them trace under `tf.function`, XLA,
`jax.jit` and torch alike. `sing_adam_step` is the whole per-variable step
of the paper's recipe; the optimizer's execution paths call these
functions, and the batched fast paths (`keras_sing.backend.torch`) are
tested against them. Reference: Courtois et al., [SING: A Plug-and-Play DNN
Learning Technique](https://arxiv.org/abs/2305.15997), 2023.
"""

import collections
import math

import keras
import numpy as np
from keras import backend
from keras import ops

from keras_sing import backend as backend_lib

_LOW_PRECISION = ("float16", "bfloat16")

# The largest tensor whose norm SING's statistics take in `l2_norm`'s three
# lanes; larger ones take its bounded form (scaled by max|G|). Both are
# exact. The lanes are one reduction with no pass before it, which saves
# XLA a fusion per tensor (compile time, the same for any size); they
# compute three squares per element, where the bounded form's max|G| comes
# from the mean's own pass, so on a large tensor they cost run time
# (+5% on a ResNet-50-shaped step on JAX, more on TensorFlow;
# docs/performance.md).
LANE_ELEMENTS = 4096


def compute_dtype(dtype):
    """The dtype SING computes in for a tensor of `dtype`.

    Reductions over a whole tensor lose too much in float16/bfloat16 (the
    sum of squares of a float16 tensor overflows at 256), so those are
    promoted to float32; every other dtype is kept.

    Args:
        dtype: a dtype or dtype name.

    Returns:
        The dtype name to compute in.

    Examples:
        >>> from keras_sing import transforms
        >>> [transforms.compute_dtype(d) for d in ("bfloat16", "float64")]
        ['float32', 'float64']

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
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

    Args:
        gradient: a tensor.
        axes: the fan-in axes (a tuple of ints), or `None`.

    Returns:
        The centralized gradient, same shape and dtype.

    Examples:
        One mean per column (output unit) of a `Dense` kernel `(3, 2)`:

        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> g = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
        >>> print(ops.convert_to_numpy(transforms.centralize(g, (0,))))
        [[-2. -2.]
         [ 0.  0.]
         [ 2.  2.]]

    References:
        - Yong et al., [Gradient Centralization](
          https://arxiv.org/abs/2004.01461), 2020.
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
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

    Update rule:

        mean(g, axes) = g0 + mean(g - g0, axes)

    Args:
        gradient: a tensor.
        axes: the axes to average over (a non-empty tuple of ints).

    Returns:
        The mean, with `axes` kept as size-1 dimensions.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> g = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
        >>> print(ops.convert_to_numpy(transforms.unit_mean(g, (0,))))
        [[3. 4.]]

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    ndim = len(gradient.shape)
    axes = tuple(sorted(a % ndim for a in axes))
    first = tuple(
        slice(0, 1) if i in axes else slice(None) for i in range(ndim)
    )
    g0 = gradient[first]
    # mean(g, axes) = g0 + mean(g - g0, axes)
    shifted = ops.subtract(gradient, g0)
    sizes = [gradient.shape[a] for a in axes]
    if backend.standardize_dtype(gradient.dtype) == "float64" and (
        None not in sizes
    ):
        # keras.ops.mean averages float64 in float32 on JAX and torch
        # (Keras 3.15); the sum keeps float64
        count = math.prod(sizes)
        shifted_mean = ops.divide(
            ops.sum(shifted, axis=axes, keepdims=True),
            ops.cast(count, "float64"),
        )
    else:
        shifted_mean = ops.mean(shifted, axis=axes, keepdims=True)
    return ops.add(g0, shifted_mean)


def l2_norm(x, bound=None):
    """The L2 (Frobenius) norm of the whole tensor, safe at any scale.

    Update rule (`bound=None`: three lanes in one reduction):
        S_c = sum((c x)^2)    for c = 1, c_lo, c_hi (one (3, n) sum)
        ||x||_2 = sqrt(S_1)             if 2^lo <= S_1 < 2^hi
                = sqrt(S_lo) / c_lo     if S_1 >= 2^hi, or NaN
                = sqrt(S_hi) / c_hi     if S_1 < 2^lo
    Update rule (`bound` given: scaled by its maximum):
        s = 2^floor(log2(max|b|))       b = `bound`
        ||x||_2 = s * sqrt(sum((x / s)^2))

    Both forms scale by powers of two, which is exact, so both give the
    plain `sqrt(sum(x^2))` to the last bit wherever that does not overflow
    or underflow, and stay right where it would (float32 overflows at
    |x| ~ 1e19, and underflows for |x| < 1e-19). Neither branches: compiled
    code has no `cond` per variable.

    - The lanes (`c_lo = 2^-88`, `c_hi = 2^86` in float32; float64 has
      its own) are one reduction with no pass before it, which XLA fuses
      into one kernel. The scaled lanes cannot overflow for a finite `x`,
      so the chosen sum is NaN or inf exactly when `x` holds a NaN or an
      inf. `l2_norm` and SING's statistics use this form for tensors of
      up to `LANE_ELEMENTS` elements.
    - `bound` is a tensor with `max|x| <= 4 max|bound|`: the raw gradient
      for a centralized one (|g - mean(g)| <= 2 max|g|). This form takes
      one reduction for `s` before the sum, but computes one square per
      element where the lanes compute three. Larger tensors take it
      (`bound = x` by default; SING's statistics take max|G| beside the
      unit mean), and so does torch's batched step for every tensor (its
      finiteness check has max|G| at hand).

    Both are computed in float32 for float16/bfloat16. An all-zero `x` (or
    an empty one) gives 0.

    Args:
        x: a tensor.
        bound: a tensor with `max|x| <= 4 max|bound|`, whose maximum sets
            the scale, or `None`: the three lanes for a tensor of up to
            `LANE_ELEMENTS` elements, `x` itself above. Defaults to `None`.

    Returns:
        A scalar: `||x||_2`, in `x`'s dtype.

    Examples:
        Exact where `sum(x^2)` would overflow float32:

        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> x = np.array([3e30, 4e30], "float32")
        >>> print(f"{float(ops.convert_to_numpy(transforms.l2_norm(x))):.3g}")
        5e+30
        >>> norm = transforms.l2_norm(x, bound=x)
        >>> print(f"{float(ops.convert_to_numpy(norm)):.3g}")
        5e+30

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    if 0 in tuple(x.shape):
        return ops.zeros((), x.dtype)
    dtype = backend.standardize_dtype(x.dtype)
    wide = ops.cast(x, compute_dtype(dtype))
    if bound is not None:
        bound = ops.cast(bound, wide.dtype)
    elif not _takes_lanes(x):
        bound = wide
    root, scale = _scaled_l2_norm(wide, bound)
    return ops.cast(ops.multiply(root, scale), dtype)


def _scaled_l2_norm(x, bound):
    """`(r, s)` with `||x||_2 = s * r`, `x` in its compute dtype: the
    three lanes (`bound=None`), or `s` the power of two below max|bound|
    and `r = ||x / s||_2`. `r` cannot overflow for a finite `x` (in the
    bounded form, `|x / s| < 8` given `max|x| <= 4 max|bound|`), so it is
    NaN or inf exactly when `x` holds a NaN or an inf."""
    if bound is None:
        return _lane_l2_norm(x)
    scale, inverse = power_of_two_scale(ops.max(ops.abs(bound)))
    # ||x|| = s * sqrt(sum((x / s)^2))
    return ops.sqrt(ops.sum(ops.square(ops.multiply(x, inverse)))), scale


def _lane_l2_norm(x):
    """`l2_norm`'s three lanes: `(sqrt(S_c), 1 / c)` for the lane chosen."""
    dtype = backend.standardize_dtype(x.dtype)
    lanes, low, high, scales = (
        ops.convert_to_tensor(c, dtype) for c in _norm_lanes(dtype)
    )
    flat = ops.reshape(x, (1, -1))
    # S_c = sum((c x)^2) for the three c, in one reduction
    sums = ops.sum(ops.square(ops.multiply(flat, lanes)), axis=1)
    plain, down, up = sums[0], sums[1], sums[2]
    # NaN fails `<`: a NaN or an inf takes the down lane, and stays so
    use_down = ops.logical_not(ops.less(plain, high))
    use_up = ops.less(plain, low)
    chosen = ops.where(use_down, down, ops.where(use_up, up, plain))
    scale = ops.where(
        use_down, scales[1], ops.where(use_up, scales[2], scales[0])
    )
    return ops.sqrt(chosen), scale


def _norm_lanes(dtype):
    """`l2_norm`'s lane constants for a float dtype (float32 or wider):
    `(c, 2^lo, 2^hi, 1 / c)`, `c = (1, c_lo, c_hi)` a `(3, 1)` array.

    Update rule (from the dtype's exponent range [emin, emax) and its
    mantissa bits p):
        2^hi = 2^(emax - 8)              the plain sum's ceiling
        2^lo = 2^(emin / 2 - 1)          its floor
        c_lo = 2^-(emax / 2 + 24)        (max|x| c_lo)^2 n is finite, n < 2^48
        c_hi = 2^(p - emin + emin / 2)   the smallest subnormal's square,
                                         times c_hi^2, is normal

    float32: `2^-64 <= S_1 < 2^120`, `c_lo = 2^-88`, `c_hi = 2^86`.

    Args:
        dtype: the dtype name of the tensors to take the norm of.

    Returns:
        `(c, 2^lo, 2^hi, 1 / c)`, NumPy values of `dtype`.
    """
    info = np.finfo(dtype)
    emax, emin, p = info.maxexp, info.minexp, info.nmant
    down = -(emax // 2 + 24)
    up = p - emin + emin // 2
    exponents = np.array([0, down, up])
    lanes = np.ldexp(np.ones(3), exponents).astype(dtype).reshape(3, 1)
    scales = np.ldexp(np.ones(3), -exponents).astype(dtype)
    low = np.asarray(np.ldexp(1.0, emin // 2 - 1), dtype)
    high = np.asarray(np.ldexp(1.0, emax - 8), dtype)
    return lanes, low, high, scales


def power_of_two_scale(magnitude):
    """The power of two at or below a magnitude, and its inverse.

    Update rule:
        k = clip(floor(log2(magnitude)), minexp, -minexp)
        returns (2^k, 2^-k)

    `k` is clipped so that both are normal numbers of `magnitude`'s dtype
    (0 gives the smallest `2^k`). Multiplying by either is exact: `l2_norm`
    scales by them.

    Args:
        magnitude: a non-negative scalar tensor.

    Returns:
        `(2^k, 2^-k)`, two scalars in `magnitude`'s dtype.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> scale, inverse = transforms.power_of_two_scale(np.float32(12.0))
        >>> print(ops.convert_to_numpy(scale), ops.convert_to_numpy(inverse))
        8.0 0.125

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    info = np.finfo(backend.standardize_dtype(magnitude.dtype))
    k = ops.clip(ops.floor(ops.log2(magnitude)), info.minexp, -info.minexp)
    two = ops.cast(2, magnitude.dtype)
    return ops.power(two, k), ops.power(two, ops.negative(k))


def normalize(gradient, epsilon):
    """Gradient normalization by the L2 norm of the whole tensor.

    Update rule:
        g <- g / (||g||_2 + epsilon)

    An all-zero gradient stays all-zero (never NaN), and a positive rescaling
    `c * g` gives the same result as long as `c * ||g|| >> epsilon`.

    Args:
        gradient: a tensor.
        epsilon: added to the norm, > 0.

    Returns:
        The normalized gradient, same shape and dtype.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> g = np.array([3.0, 4.0], "float32")
        >>> print(ops.convert_to_numpy(transforms.normalize(g, 1e-8)))
        [0.6 0.8]

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    # g <- g / (||g|| + eps)
    return ops.divide(gradient, l2_norm(gradient) + epsilon)


def standardize(gradient, axes, epsilon, *, centralize_=True, normalize_=True):
    """SING's gradient standardization: centralize, then normalize.

    Update rule:
        g <- g - mean(g, axes)           if centralize_ and axes
        g <- g / (||g||_2 + epsilon)     if normalize_

    Computed in float32 for float16/bfloat16 gradients and returned in the
    gradient's dtype. Empty tensors are returned unchanged.

    Args:
        gradient: a tensor.
        axes: the fan-in axes of the centralization, or `None`.
        epsilon: the `epsilon` of the normalization, > 0.
        centralize_: whether to centralize. Defaults to `True`.
        normalize_: whether to normalize. Defaults to `True`.

    Returns:
        The standardized gradient, same shape and dtype.

    Examples:
        Centralized to `[[-2, -2], [0, 0], [2, 2]]`, whose norm is 4:

        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> g = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
        >>> print(ops.convert_to_numpy(transforms.standardize(g, (0,), 1e-8)))
        [[-0.5 -0.5]
         [ 0.   0. ]
         [ 0.5  0.5]]

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    return standardize_with_norm(
        gradient, axes, epsilon, centralize_=centralize_, normalize_=normalize_
    )[0]


def standardize_with_norm(
    gradient, axes, epsilon, *, centralize_=True, normalize_=True,
    statistics=None,
):
    """`standardize`, also returning the norm it divides by.

    Update rule:
        g <- g - mean(g, axes)           if centralize_ and axes
        n = ||g||_2                      (l2_norm: lanes, or scaled by max|G|)
        g <- g / (n + epsilon)           if normalize_

    Args:
        gradient: a tensor.
        axes: the fan-in axes of the centralization, or `None`.
        epsilon: the `epsilon` of the normalization, > 0.
        centralize_: whether to centralize. Defaults to `True`.
        normalize_: whether to normalize. Defaults to `True`.
        statistics: `standardization_statistics(gradient, axes,
            centralize_=centralize_)` if already computed, else `None`.
            Defaults to `None`.

    Returns:
        `(g, n)`: the standardized gradient (same shape and dtype) and `n`,
        the norm of the centralized gradient (a float32 or wider scalar),
        which SING records.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> g = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
        >>> g, n = transforms.standardize_with_norm(g, (0,), 1e-8)
        >>> print(ops.convert_to_numpy(n))
        4.0

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    if statistics is None:
        statistics = standardization_statistics(
            gradient, axes, centralize_=centralize_
        )
    mean, norm, _ = statistics
    return apply_standardization(
        gradient, mean, norm, epsilon, normalize_=normalize_
    ), norm


def standardization_statistics(gradient, axes, *, centralize_=True):
    """The two statistics of SING's standardization: the unit mean and
    the norm of the centralized gradient.

    Update rule:
        mu = mean(G, axes)               if centralize_ and axes
        n = ||G - mu||_2                 (l2_norm: lanes, or scaled by max|G|)

    The norm is `l2_norm`'s, in three lanes for a tensor of up to
    `LANE_ELEMENTS` elements (one reduction, no pass before it: less to
    compile), scaled by max|G| above (less arithmetic per element; max|G|
    is taken beside the mean). Either way it is exact, and its scaled
    part cannot overflow, so it is NaN or inf exactly when `G` holds a
    NaN or an inf: SING reads the gradients' finiteness from it, with no
    pass of its own.

    Args:
        gradient: `G`, a tensor.
        axes: the fan-in axes of the centralization, or `None`.
        centralize_: whether to centralize. Defaults to `True`.

    Returns:
        `(mu, n, finite)`: the unit mean (`None` without centralization)
        and the norm, both in the compute dtype (float32 for
        float16/bfloat16), and whether `G` holds no NaN or inf (a boolean
        scalar).

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> g = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
        >>> mean, norm, finite = transforms.standardization_statistics(g, (0,))
        >>> mean, norm = ops.convert_to_numpy(mean), ops.convert_to_numpy(norm)
        >>> print(mean, norm, bool(finite))
        [[3. 4.]] 4.0 True

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    dtype = compute_dtype(backend.standardize_dtype(gradient.dtype))
    if 0 in tuple(gradient.shape):
        return None, ops.zeros((), dtype), ops.convert_to_tensor(True)
    g = ops.cast(gradient, dtype)
    mean = unit_mean(g, axes) if centralize_ and axes else None
    centered = g if mean is None else ops.subtract(g, mean)
    root, scale = _scaled_l2_norm(centered, None if _takes_lanes(g) else g)
    return mean, ops.multiply(root, scale), ops.isfinite(root)


def _takes_lanes(x):
    """Whether `l2_norm` takes `x`'s norm in its three lanes (by default,
    and in SING's statistics): `x` has at most `LANE_ELEMENTS` elements.
    A shape not fully known when traced counts as large."""
    shape = tuple(x.shape)
    if any(d is None for d in shape):
        return False
    return int(np.prod(shape)) <= LANE_ELEMENTS


def apply_standardization(gradient, mean, norm, epsilon, *, normalize_=True):
    """SING's standardization from its statistics.

    Update rule:
        g <- G - mu                      if mu is not None
        g <- g / (n + epsilon)           if normalize_

    Args:
        gradient: `G`, a tensor.
        mean: `mu`, the unit mean, or `None` for no centralization.
        norm: `n`, the norm of `G - mu`.
        epsilon: the `epsilon` of the normalization, > 0.
        normalize_: whether to divide by the norm. Defaults to `True`.

    Returns:
        The standardized gradient, in `G`'s dtype; `G` itself (not even
        cast, so a sparse `G` stays sparse) when neither step applies.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> g = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
        >>> mean = np.array([[3.0, 4.0]], "float32")
        >>> g = transforms.apply_standardization(g, mean, 4.0, 1e-8)
        >>> print(ops.convert_to_numpy(g))
        [[-0.5 -0.5]
         [ 0.   0. ]
         [ 0.5  0.5]]

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    if mean is None and not normalize_:
        return gradient
    dtype = backend.standardize_dtype(gradient.dtype)
    if 0 in tuple(gradient.shape):
        return gradient
    g = ops.cast(gradient, compute_dtype(dtype))
    if mean is not None:
        # g <- g - mean(g, axes)
        g = ops.subtract(g, mean)
    if normalize_:
        # g <- g / (||g|| + eps)
        g = ops.divide(g, norm + epsilon)
    return ops.cast(g, dtype)


def softplus_calibrate(denominator, beta):
    """Softplus calibration of Adam's denominator (SAdam).

    Update rule:
        d <- softplus(beta * d) / beta = log(1 + exp(beta * d)) / beta

    It replaces Adam's `d + epsilon`: `d` is kept where `beta * d >> 1` and
    floored at `log(2) / beta` near zero (0.0139 for `beta = 50`).

    Args:
        denominator: `d`, a non-negative tensor.
        beta: the sharpness, > 0.

    Returns:
        The calibrated denominator, same shape.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> d = np.array([0.0, 0.01, 0.5], "float32")
        >>> calibrated = transforms.softplus_calibrate(d, 50.0)
        >>> print(np.round(ops.convert_to_numpy(calibrated), 4))
        [0.0139 0.0195 0.5   ]

    References:
        - Tong et al., [Calibrating the Adaptive Learning Rate to Improve
          Convergence of ADAM](https://arxiv.org/abs/1908.00700), 2019.
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    # d <- softplus(beta * d) / beta
    return ops.divide(ops.softplus(ops.multiply(denominator, beta)), beta)


def lookahead_merge(fast, slow, alpha):
    """LookAhead's synchronization of the fast weights with the slow copy.

    Update rule:
        W <- alpha * W + (1 - alpha) * S = S + alpha * (W - S)

    after which the caller sets `S <- W`. `alpha = 1` keeps the fast weights.

    Args:
        fast: `W`, the weights after the inner optimizer's k steps.
        slow: `S`, the slow copy.
        alpha: the interpolation factor, in (0, 1].

    Returns:
        The merged weights.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> w, s = np.array([2.0, 4.0], "float32"), np.zeros(2, "float32")
        >>> print(ops.convert_to_numpy(transforms.lookahead_merge(w, s, 0.5)))
        [1. 2.]

    References:
        - Zhang et al., [Lookahead Optimizer: k steps forward, 1 step
          back](https://arxiv.org/abs/1907.08610), 2019.
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    # W <- S + alpha * (W - S)
    return ops.add(slow, ops.multiply(ops.subtract(fast, slow), alpha))


def decoupled_weight_decay(weight, learning_rate, weight_decay):
    """AdamW's decoupled weight decay, applied before the update.

    Update rule:
        W <- W - lr * weight_decay * W

    SING applies it before the update, to ndim > 1 variables only by
    default (`SING`'s `weight_decay_mode`).

    Args:
        weight: `W`.
        learning_rate: `lr`, the host's learning rate at this step.
        weight_decay: the host's decoupled weight decay.

    Returns:
        The decayed weights.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> w = np.array([1.0, -2.0], "float32")
        >>> decayed = transforms.decoupled_weight_decay(w, 0.1, 0.5)
        >>> print(ops.convert_to_numpy(decayed))
        [ 0.95 -1.9 ]

    References:
        - Loshchilov and Hutter, [Decoupled Weight Decay
          Regularization](https://arxiv.org/abs/1711.05101), 2019.
    """
    # W <- W - W * wd * lr
    return ops.subtract(weight, weight * weight_decay * learning_rate)


def adam_moments(m, v, gradient, beta_1, beta_2):
    """Adam's first and second moments.

    Update rule:
        m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2

    Args:
        m: the first moment.
        v: the second moment.
        gradient: `g`, the standardized gradient.
        beta_1: `b1`.
        beta_2: `b2`.

    Returns:
        `(m, v)`, the new moments.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> zeros, g = np.zeros(2, "float32"), np.array([0.5, -0.5], "float32")
        >>> m, v = transforms.adam_moments(zeros, zeros, g, 0.9, 0.999)
        >>> m, v = ops.convert_to_numpy(m), ops.convert_to_numpy(v)
        >>> print(np.round(m, 6), np.round(v, 6))
        [ 0.05 -0.05] [0.00025 0.00025]

    References:
        - Kingma and Ba, [Adam: A Method for Stochastic Optimization](
          https://arxiv.org/abs/1412.6980), 2015.
    """
    # m <- b1 m + (1 - b1) g
    m = ops.add(ops.multiply(m, beta_1), ops.multiply(gradient, 1 - beta_1))
    # v <- b2 v + (1 - b2) g^2
    v = ops.add(
        ops.multiply(v, beta_2), ops.multiply(ops.square(gradient), 1 - beta_2)
    )
    return m, v


def adam_denominator(v, step, beta_2, epsilon, softplus_beta=None):
    """Adam's denominator, bias-corrected, as published with SING.

    Update rule:
        d <- sqrt(v) / sqrt(1 - b2^t)
        d <- softplus(beta * d) / beta     if softplus_beta (SAdam)
        d <- d + epsilon                   otherwise

    Keras's `Adam` adds its `epsilon` to the uncorrected `sqrt(v)` instead.

    Args:
        v: the second moment.
        step: `t`, the 1-based real update count.
        beta_2: `b2`.
        epsilon: added when `softplus_beta` is `None`.
        softplus_beta: `beta` of the softplus calibration, or `None` for
            `d + epsilon`. Defaults to `None`.

    Returns:
        The denominator `d`, same shape as `v`.

    Examples:
        After one step on `g = 0.5` (`v = 0.001 * 0.25`), `d` is `|g|`:

        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> v = np.array([0.00025, 0.0], "float32")
        >>> d = transforms.adam_denominator(
        ...     v, 1, 0.999, 1e-8, softplus_beta=50.0
        ... )
        >>> print(np.round(ops.convert_to_numpy(d), 4))
        [0.5    0.0139]

    References:
        - Kingma and Ba, [Adam: A Method for Stochastic Optimization](
          https://arxiv.org/abs/1412.6980), 2015.
        - Tong et al., [Calibrating the Adaptive Learning Rate to Improve
          Convergence of ADAM](https://arxiv.org/abs/1908.00700), 2019.
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    # d <- sqrt(v) / sqrt(1 - b2^t)
    d = ops.divide(ops.sqrt(v), ops.sqrt(1 - ops.power(beta_2, step)))
    if softplus_beta is not None:
        return softplus_calibrate(d, softplus_beta)
    # d <- d + eps
    return ops.add(d, epsilon)


def adam_update(weight, m, denominator, learning_rate, step, beta_1):
    """Adam's bias-corrected step.

    Update rule:
        W <- W - lr / (1 - b1^t) * m / d

    Args:
        weight: `W`.
        m: the first moment.
        denominator: `d`, from `adam_denominator`.
        learning_rate: `lr`, the host's learning rate at this step.
        step: `t`, the 1-based real update count.
        beta_1: `b1`.

    Returns:
        The updated weights.

    Examples:
        Adam's first step moves each weight by `lr` against the
        gradient's sign:

        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> w, m = np.ones(2, "float32"), np.array([0.05, -0.05], "float32")
        >>> d = np.array([0.5, 0.5], "float32")
        >>> w = transforms.adam_update(w, m, d, 5e-3, 1, 0.9)
        >>> print(ops.convert_to_numpy(w))
        [0.995 1.005]

    References:
        - Kingma and Ba, [Adam: A Method for Stochastic Optimization](
          https://arxiv.org/abs/1412.6980), 2015.
    """
    # W <- W - lr / (1 - b1^t) * m / d
    step_size = ops.divide(learning_rate, 1 - ops.power(beta_1, step))
    return ops.subtract(weight, step_size * ops.divide(m, denominator))


def lookahead_flags(step, lookahead_steps, taken=True):
    """When LookAhead acts at real update `t`: `(first, sync)`.

    Update rule:
        first = taken and t = 1            S <- W (the seed)
        sync  = taken and t % k = 0        W, S <- S + alpha (W - S)

    Args:
        step: `t`, the 1-based real update count (a scalar).
        lookahead_steps: `k`.
        taken: whether this call updates at all (`False` on a
            gradient-accumulation micro-step or a skipped step). Defaults
            to `True`.

    Returns:
        `(first, sync)`, two scalar booleans.

    Examples:
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> step = ops.convert_to_tensor(5)
        >>> first, sync = transforms.lookahead_flags(step, 5)
        >>> bool(first), bool(sync)
        (False, True)

    References:
        - Zhang et al., [Lookahead Optimizer: k steps forward, 1 step
          back](https://arxiv.org/abs/1907.08610), 2019.
    """
    first = ops.logical_and(ops.equal(step, 1), taken)
    sync = ops.logical_and(ops.equal(ops.mod(step, lookahead_steps), 0), taken)
    return first, sync


def lookahead_seed(slow, weight, first):
    """LookAhead's slow copy, taken just before the first update.

    Update rule:
        S <- W     at t = 1

    `slow` and `weight` are tensors, or lists of tensors: one `cond` on the
    scalar `first` for all of them (compiled, the other steps copy
    nothing, and a list costs one branch, not one per variable).

    Args:
        slow: `S`, a tensor or a list of tensors.
        weight: `W`, the same structure as `slow`.
        first: a scalar boolean: whether this is the first update.

    Returns:
        The new `S`: copies of `weight` (in `slow`'s dtypes) if `first`,
        else `slow`.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> slow, w = np.zeros(2, "float32"), np.ones(2, "float32")
        >>> s = transforms.lookahead_seed(slow, w, True)
        >>> print(ops.convert_to_numpy(s))
        [1. 1.]

    References:
        - Zhang et al., [Lookahead Optimizer: k steps forward, 1 step
          back](https://arxiv.org/abs/1907.08610), 2019.
    """

    def seeded():
        # a copy: on torch a variable's value is its storage, which the
        # update then changes in place
        return keras.tree.map_structure(
            lambda s, w: ops.copy(ops.cast(w, s.dtype)), slow, weight
        )

    return backend_lib.cond(first, seeded, lambda: slow)


def lookahead_sync(weight, slow, sync, alpha):
    """LookAhead's synchronization, every k-th step: `(W, S)`.

    Update rule:
        W <- S + alpha (W - S) ;  S <- W      when `sync`

    `weight` and `slow` are tensors, or lists of tensors: one `cond` on the
    scalar `sync` for all of them (compiled, the other steps leave `S`
    untouched).

    Args:
        weight: `W`, a tensor or a list of tensors.
        slow: `S`, the same structure as `weight`.
        sync: a scalar boolean: whether this step synchronizes.
        alpha: LookAhead's `alpha`, in (0, 1].

    Returns:
        `(W, S)`, the new values (each the same structure as the inputs).

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> w, s = np.full(2, 3.0, "float32"), np.ones(2, "float32")
        >>> w, s = transforms.lookahead_sync(w, s, True, 0.5)
        >>> print(ops.convert_to_numpy(w), ops.convert_to_numpy(s))
        [2. 2.] [2. 2.]

    References:
        - Zhang et al., [Lookahead Optimizer: k steps forward, 1 step
          back](https://arxiv.org/abs/1907.08610), 2019.
    """

    def merged_one(w, s):
        w = lookahead_merge(w, ops.cast(s, w.dtype), alpha)
        return w, ops.cast(w, s.dtype)

    def merged():
        if isinstance(weight, (list, tuple)):
            pairs = [
                merged_one(w, s) for w, s in zip(weight, slow, strict=True)
            ]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        return merged_one(weight, slow)

    return backend_lib.cond(sync, merged, lambda: (weight, slow))


# The hyper-parameters of `sing_adam_step`: Python numbers (or scalars).
AdamHyper = collections.namedtuple(
    "AdamHyper",
    [
        "beta_1",  # Adam's b1
        "beta_2",  # Adam's b2
        "weight_decay",  # decoupled decay, 0 for none
        "epsilon",  # of the normalization and (without softplus) of d
        "softplus_beta",  # beta of the softplus calibration, None for off
        "centralize_axes",  # fan-in axes, None for no centralization
        "normalize",  # whether to normalize
        "standardize",  # False: the gradient is used as given (exclude)
        "lookahead_steps",  # k, None for no LookAhead
        "lookahead_alpha",  # alpha
    ],
)


AdamHyper.__doc__ = """The hyper-parameters of `sing_adam_step`, per variable.

    Python numbers (or scalars), fixed for a variable: the optimizer builds
    one per variable from the host's and SING's settings.

    Args:
        beta_1: Adam's `b1`.
        beta_2: Adam's `b2`.
        weight_decay: the decoupled decay `wd` of (3), 0 for none.
        epsilon: the normalization's `eps` (2), and `d`'s without softplus.
        softplus_beta: `beta` of the softplus calibration (4b), `None` for
            `d + eps`.
        centralize_axes: the fan-in axes of (1), `None` for none.
        normalize: whether to apply (2).
        standardize: `False` to use the gradient as given (`exclude`).
        lookahead_steps: LookAhead's `k`, `None` for none.
        lookahead_alpha: LookAhead's `alpha`.

    Examples:
        >>> from keras_sing import transforms
        >>> hyper = transforms.AdamHyper(
        ...     beta_1=0.9, beta_2=0.999, weight_decay=0.0, epsilon=1e-8,
        ...     softplus_beta=50.0, centralize_axes=(0,), normalize=True,
        ...     standardize=True, lookahead_steps=5, lookahead_alpha=0.5)
        >>> hyper.softplus_beta
        50.0

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """


def sing_adam_step(gradient, weight, m, v, slow, step, learning_rate, hyper,
                   v_max=None, is_update=True, statistics=None):
    """The paper's whole step for one variable: AdamW + SING + LookAhead.

    Update rule, at real step `t` (docs/algorithm.md):
        S <- W                                    t = 1 (LookAhead)
        W <- W - lr wd W                          decoupled decay
        g <- standardize(G) ;  n = ||g||_2        centralize, normalize
        m, v <- adam_moments(m, v, g)
        v_max <- max(v_max, v), used as v         amsgrad
        W <- W - lr / (1 - b1^t) m / d(v)         d: adam_denominator
        W, S <- S + alpha (W - S), W              t % k = 0 (LookAhead)

    The optimizer runs LookAhead once for all variables around the host's
    update (`slow=None` here), except under `tf.distribute`, where each
    variable's update calls this with its `slow`.

    Args:
        gradient: `G`, the gradient value (not a variable).
        weight: `W`.
        m: Adam's first moment.
        v: Adam's second moment.
        slow: LookAhead's `S`, or `None` for no LookAhead here.
        step: `t`, the 1-based real update count (a scalar).
        learning_rate: `lr_t` (a scalar).
        hyper: an `AdamHyper`: `beta_1`, `beta_2`, `weight_decay`,
            `epsilon`, `softplus_beta` (None: plain `+ epsilon`),
            `centralize_axes`, `normalize`, `standardize`,
            `lookahead_steps`, `lookahead_alpha`.
        v_max: amsgrad's running maximum of `v`, or `None`. Defaults to
            `None`.
        is_update: `False` on gradient-accumulation micro-steps whose
            results are discarded: then LookAhead neither seeds nor syncs.
            Defaults to `True`.
        statistics: `standardization_statistics` of `gradient`, if
            already computed (see `standardize_gradient`), else `None`.
            Defaults to `None`.

    Returns:
        `(weight, m, v, v_max, slow, norm)`, the new values and `||g||_2`
        (the norm the normalization divides by; the raw gradient's for an
        unstandardized variable). Nothing is decided here about
        non-finite gradients: the caller keeps or discards the whole step.

    Examples:
        One step from zero moments: the centralized gradient is
        `[-0.5, 0.5]`, and Adam's first step moves each weight by about
        `lr` against its sign.

        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> hyper = transforms.AdamHyper(
        ...     beta_1=0.9, beta_2=0.999, weight_decay=0.0, epsilon=1e-8,
        ...     softplus_beta=None, centralize_axes=(0,), normalize=True,
        ...     standardize=True, lookahead_steps=None, lookahead_alpha=0.5)
        >>> zeros = np.zeros((2, 1), "float32")
        >>> g = np.array([[1.0], [2.0]], "float32")
        >>> w, m, v, _, _, n = transforms.sing_adam_step(
        ...     g, zeros, zeros, zeros, None, 1, 0.1, hyper)
        >>> print(np.round(ops.convert_to_numpy(w), 4).ravel())
        [ 0.1 -0.1]

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
        - Loshchilov and Hutter, [Decoupled Weight Decay
          Regularization](https://arxiv.org/abs/1711.05101), 2019.
    """
    dtype = compute_dtype(weight.dtype)
    lr = ops.cast(learning_rate, dtype)
    t = ops.cast(step, dtype)
    w = ops.cast(weight, dtype)
    if slow is not None:
        first, sync = lookahead_flags(step, hyper.lookahead_steps, is_update)
        slow = lookahead_seed(slow, weight, first)
    if hyper.weight_decay:
        w = decoupled_weight_decay(w, lr, ops.cast(hyper.weight_decay, dtype))
    g, norm = standardize_gradient(gradient, hyper, statistics)
    g = ops.cast(g, dtype)
    # b1, b2 in the compute dtype, in the moments and the bias corrections
    # alike: at t = 1 their rounding then cancels in v / (1 - b2^t)
    b1 = ops.cast(hyper.beta_1, dtype)
    b2 = ops.cast(hyper.beta_2, dtype)
    m, v = adam_moments(ops.cast(m, dtype), ops.cast(v, dtype), g, b1, b2)
    v_used = v
    if v_max is not None:
        # v_max <- max(v_max, v), used in v's place
        v_max = v_used = ops.maximum(ops.cast(v_max, dtype), v)
    d = adam_denominator(v_used, t, b2, hyper.epsilon, hyper.softplus_beta)
    w = adam_update(w, m, d, lr, t, b1)
    if slow is not None:
        w, slow = lookahead_sync(w, slow, sync, hyper.lookahead_alpha)
    return w, m, v, v_max, slow, norm


def standardize_gradient(gradient, hyper, statistics=None):
    """SING's steps (1)-(2) as `hyper` says, with the norm.

    Update rule:

        g <- G - mean(G, hyper.centralize_axes)      if axes
        g <- g / (||g||_2 + hyper.epsilon)            if hyper.normalize

    Args:
        gradient: `G`.
        hyper: an `AdamHyper`.
        statistics: `standardization_statistics` of `G` (with
            `hyper.centralize_axes`, or no axes when `hyper.standardize`
            is false) if already computed, else `None`. Defaults to
            `None`.

    Returns:
        `(g, ||g||_2)`: the standardized gradient and the norm it was
        divided by; the raw gradient and its norm when `hyper.standardize`
        is false.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> hyper = transforms.AdamHyper(
        ...     beta_1=0.9, beta_2=0.999, weight_decay=0.0, epsilon=1e-8,
        ...     softplus_beta=50.0, centralize_axes=(0,), normalize=True,
        ...     standardize=True, lookahead_steps=5, lookahead_alpha=0.5,
        ... )
        >>> g = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
        >>> g, norm = transforms.standardize_gradient(g, hyper)
        >>> float(norm)
        4.0

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    return standardize_with_norm(
        gradient,
        hyper.centralize_axes,
        hyper.epsilon,
        centralize_=hyper.standardize,
        normalize_=hyper.standardize and hyper.normalize,
        statistics=statistics,
    )


def all_finite(tensors):
    """A scalar boolean: no tensor holds a NaN or an infinity.

    `sum(0 * x)` is 0 for a finite `x` and NaN if `x` holds a NaN or an inf
    (inf * 0 = NaN), and cannot overflow: a plain float reduction, which
    XLA fuses better than a reduction of booleans. `None`s are ignored.

    Args:
        tensors: a list of tensors or `None`s.

    Returns:
        A boolean scalar tensor (`True` for an empty list).

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_sing import transforms
        >>> ok = np.ones(3, "float32")
        >>> inf = np.array([np.inf], "float32")
        >>> [bool(transforms.all_finite(gs)) for gs in ([ok, None], [ok, inf])]
        [True, False]

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
    """
    sums = [
        ops.cast(ops.sum(ops.multiply(x, 0)), "float32")
        for x in tensors
        if x is not None
    ]
    if not sums:
        return ops.convert_to_tensor(True)
    return ops.isfinite(ops.sum(ops.stack(sums)))
