"""torch backend: SING's step as batched `torch._foreach_*` kernels.

Each function here is a batched form of functions of
`keras_sing.transforms`, over lists of torch tensors (never variables, never
the optimizer): `standardize` of `standardize_with_norm`,
`decoupled_weight_decay`, `published_adam` of `adam_moments`,
`adam_denominator` and `adam_update`, `lookahead_sync` of `lookahead_sync`.
`tests/test_torch_fast_path.py` checks them against those functions.
`keras_sing._host` decides when they run (Keras's fused torch optimizers
bypass `update_step`).
"""

import math

import torch


def no_grad():
    """`torch.no_grad()`: the step writes weights in place."""
    return torch.no_grad()


def is_tensor(x):
    """Whether `x` is a torch tensor."""
    return isinstance(x, torch.Tensor)


def all_full_precision(tensors):
    """Whether every tensor is float32 or float64 (the batched step's
    dtypes; others take the generic path)."""
    return {t.dtype for t in tensors} <= {torch.float32, torch.float64}


def like(tensors, references):
    """`tensors[i]` as a tensor of `references[i]`'s dtype and device."""
    return [
        torch.as_tensor(x, dtype=r.dtype, device=r.device)
        for x, r in zip(tensors, references, strict=True)
    ]


def scalar_like(value, reference):
    """`value` (a number or 0-d tensor) in `reference`'s dtype and device,
    with no host synchronization."""
    return torch.as_tensor(
        value, dtype=reference.dtype, device=reference.device
    )


def read_flags(flags):
    """Boolean scalar tensors as Python bools, in one device-to-host copy
    (one synchronization, however many flags)."""
    flags = [torch.as_tensor(f) for f in flags]
    device = flags[0].device
    stacked = torch.stack(
        [f.to(device=device, dtype=torch.bool).reshape(()) for f in flags]
    )
    return tuple(stacked.tolist())


def copy_into(targets, values):
    """`targets[i] <- values[i]`, in place, cast to each target's dtype."""
    torch._foreach_copy_(
        targets,
        [v.to(t.dtype) for t, v in zip(targets, values, strict=True)],
    )


def max_abs(grads):
    """max|g| of each tensor of `grads`, in order (None for a None or an
    empty one): one `_foreach` max-norm pass. `all_finite` reads them, and
    `standardize` reuses them for its scale."""
    live = [i for i, g in enumerate(grads) if g is not None and g.numel()]
    maxima = [None] * len(grads)
    if live:
        norms = torch._foreach_norm([grads[i] for i in live], ord=math.inf)
        for i, m in zip(live, norms, strict=True):
            maxima[i] = m
    return maxima


def all_finite(maxima):
    """`transforms.all_finite` batched, from `max_abs`'s maxima (None
    entries are finite): max|g| is NaN or inf exactly when `g` holds a NaN
    or an infinity (no overflow, unlike the L2 norm)."""
    magnitudes = [m for m in maxima if m is not None]
    if not magnitudes:
        return torch.tensor(True)
    stacked = torch.stack([m.float() for m in magnitudes])
    return torch.isfinite(stacked).all()


def centralize(gradient, axes):
    """`transforms.centralize` in native torch: `g - (g0 + mean(g - g0))`,
    `g0` each unit's first element."""
    first = tuple(
        slice(0, 1) if d in axes else slice(None) for d in range(gradient.ndim)
    )
    g0 = gradient[first]
    return gradient - (g0 + (gradient - g0).mean(dim=axes, keepdim=True))


# Largest stack `centralize_all` builds, in elements (64 MB of float32): a
# bound on the memory the stacking adds. Larger gradients gain nothing from
# it (their kernels, not their launches, take the time).
STACK_ELEMENTS = 1 << 24


def centralize_all(grads, axes):
    """`centralize` for a list (`axes[i]` None or `()` for none): the
    gradients of one shape, dtype, device and axes are stacked, up to
    `STACK_ELEMENTS` per stack, and centralized together, which launches a
    handful of kernels per stack instead of five per gradient.

    Each stacked gradient is centralized over its own axes, with the same
    formula as `centralize`: `g - (g0 + mean(g - g0))`."""
    out = list(grads)
    groups = {}
    for i, (g, a) in enumerate(zip(grads, axes, strict=True)):
        if a:
            key = (g.shape, g.dtype, g.device, tuple(a))
            groups.setdefault(key, []).append(i)
    for (_, _, _, a), members in groups.items():
        per_stack = max(1, STACK_ELEMENTS // max(1, grads[members[0]].numel()))
        for start in range(0, len(members), per_stack):
            chunk = members[start:start + per_stack]
            if len(chunk) == 1:
                out[chunk[0]] = centralize(grads[chunk[0]], a)
                continue
            stacked = torch.stack([grads[i] for i in chunk])
            centered = centralize(stacked, tuple(d + 1 for d in a))
            for i, g in zip(chunk, centered.unbind(), strict=True):
                out[i] = g
    return out


def standardize(grads, axes, normalize, epsilon, maxima=None):
    """`transforms.standardize_with_norm` for a list: `(grads, norms)`.

    `axes[i]` is the centralization axes of `grads[i]` (None for none);
    `normalize[i]` whether to divide it by its norm. The norms are
    `transforms.l2_norm(g, bound=G)`, its bounded form: `s * ||g / s||`,
    `s` the power of two below the raw gradient's max|G| (exact, no
    overflow, no underflow; the value of the three lanes the generic path
    takes, up to rounding), with max|G| from `maxima[i]` (`max_abs` of the
    same tensors: the finiteness check's) where it is given, else computed
    (one pass for all that lack it)."""
    out = centralize_all(grads, axes)
    # ||g|| = 0 for an empty g; every other norm is computed below (no
    # zeros launched for them: on a GPU each would be a kernel)
    norms = [
        None if g.numel() else torch.zeros((), dtype=g.dtype, device=g.device)
        for g in out
    ]
    nonempty = [i for i, g in enumerate(out) if g.numel()]
    if not nonempty:
        return out, norms
    live = [out[i] for i in nonempty]
    # s = 2^floor(log2(max|G|)) ;  ||g|| = s * ||g / s||
    given = [None] * len(grads) if maxima is None else maxima
    missing = max_abs(
        [grads[i] if given[i] is None else None for i in nonempty]
    )
    magnitudes = [
        m if given[i] is None else given[i]
        for i, m in zip(nonempty, missing, strict=True)
    ]
    scale, inverse = power_of_two_scale(magnitudes)
    live_norms = torch._foreach_mul(
        torch._foreach_norm(torch._foreach_mul(live, inverse)), scale
    )
    divided = [i for i in nonempty if normalize[i]]
    if divided:
        position = {i: n for n, i in enumerate(nonempty)}
        # g <- g / (||g|| + eps)
        den = torch._foreach_add(
            [live_norms[position[i]] for i in divided], epsilon
        )
        quotients = torch._foreach_div([out[i] for i in divided], den)
        for i, g in zip(divided, quotients, strict=True):
            out[i] = g
    for i, n in zip(nonempty, live_norms, strict=True):
        norms[i] = n
    return out, norms


def power_of_two_scale(magnitudes):
    """`transforms.power_of_two_scale` for a list: `(2^k, 2^-k)` lists,
    each in its magnitude's dtype."""
    dtypes = {m.dtype for m in magnitudes}
    if len(dtypes) == 1:  # the usual case: one stack, no conversions
        k = torch.stack(magnitudes).log2().floor()
        limit = -math.log2(torch.finfo(k.dtype).tiny)
        k = k.clamp(-limit, limit)
        return list(torch.exp2(k).unbind()), list(torch.exp2(-k).unbind())
    k = torch.stack([m.to(torch.float64) for m in magnitudes]).log2().floor()
    # 2^k and 2^-k normal in each dtype: |k| <= -log2(tiny)
    limit = torch.tensor(
        [-math.log2(torch.finfo(m.dtype).tiny) for m in magnitudes],
        dtype=torch.float64,
        device=k.device,
    )
    k = torch.minimum(torch.maximum(k, -limit), limit)
    scale, inverse = torch.exp2(k).unbind(), torch.exp2(-k).unbind()
    return (
        [s.to(m.dtype) for s, m in zip(scale, magnitudes, strict=True)],
        [s.to(m.dtype) for s, m in zip(inverse, magnitudes, strict=True)],
    )


def decoupled_weight_decay(weights, learning_rate, weight_decay):
    """W <- W (1 - lr wd), in place."""
    if weights:
        torch._foreach_mul_(weights, 1 - learning_rate * weight_decay)


def published_adam(grads, weights, m, v, v_max, step, learning_rate,
                   beta_1, beta_2, epsilon, softplus_beta):
    """Adam as published with SING, in place on `weights`, `m`, `v` (and
    `v_max` for amsgrad, else None)."""
    # m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
    torch._foreach_lerp_(m, grads, 1 - beta_1)
    torch._foreach_mul_(v, beta_2)
    torch._foreach_addcmul_(v, grads, grads, value=1 - beta_2)
    if v_max is not None:
        # v_max <- max(v_max, v), used in v's place
        torch._foreach_maximum_(v_max, v)
        v = v_max
    # Bias corrections in float64: in float32, 1 - 0.999^t loses 1e-5 of
    # relative precision to cancellation.
    t64 = step.to(torch.float64)
    bias_correction1 = (1 - beta_1**t64).to(step.dtype)
    bias_correction2 = (1 - beta_2**t64).to(step.dtype)
    # d <- sqrt(v) / sqrt(1 - b2^t)
    d = torch._foreach_sqrt(v)
    torch._foreach_div_(d, torch.sqrt(bias_correction2))
    if softplus_beta is not None:
        # d <- softplus(beta d) / beta = d + log1p(exp(-beta d)) / beta
        tail = torch._foreach_mul(d, -softplus_beta)
        torch._foreach_exp_(tail)
        torch._foreach_log1p_(tail)
        torch._foreach_add_(d, tail, alpha=1.0 / softplus_beta)
    else:
        # d <- d + eps
        torch._foreach_add_(d, epsilon)
    # W <- W - lr / (1 - b1^t) * m / d  =  W - m / (d (1 - b1^t) / lr)
    torch._foreach_mul_(d, bias_correction1 / learning_rate)
    torch._foreach_addcdiv_(weights, m, d, value=-1.0)


def lookahead_seed(slow, weights):
    """S <- W, in place."""
    torch._foreach_copy_(slow, weights)


def lookahead_sync(weights, slow, alpha):
    """S <- S + alpha (W - S) ;  W <- S, in place."""
    torch._foreach_lerp_(slow, weights, alpha)
    torch._foreach_copy_(weights, slow)
