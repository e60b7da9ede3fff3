"""torch backend: SING's step as batched `torch._foreach_*` kernels.

On torch, Keras swaps stock `Adam`, `AdamW`, `SGD`, `Lion`, ... instances for
`TorchParallelOptimizer` subclasses whose `_backend_update_step` runs
`_foreach` kernels and never calls `update_step`, where SING's generic path
does its work. Two routes replace the host's `_backend_update_step`:

- `fused_update_step` (the fast path, used when every variable is float32
  or float64): the whole SING step for all variables at once with
  `torch._foreach_*` kernels: LookAhead seeding, decay, centralization (one mean per tensor), scaled L2 norms,
  the published Adam step (Adam/AdamW hosts) or the host's own fused update
  (SGD, Lion, ...), and LookAhead's sync. With LookAhead, the step number
  is read on the host (one synchronization per step), so that `S` is read
  and written only at the steps that change it.
- `generic_update_step`: the host's own non-fused `_backend_update_step`,
  which keeps its per-step bookkeeping (e.g. Nadam's) and calls SING's
  per-variable `update_step` (the `keras.ops` reference path).

`tests/test_torch_fast_path.py` checks the first against the second.
"""

import functools
import math

import torch
from keras.ops import convert_to_tensor
from keras.src.backend.torch.optimizers.torch_parallel_optimizer import (
    TorchParallelOptimizer,
)

FAST_PATH = True  # tests turn it off to compare with the generic path


def generic_update_step(host):
    """The host's `_backend_update_step` without the fused torch path."""
    if isinstance(host, TorchParallelOptimizer):
        update = super(TorchParallelOptimizer, host)._backend_update_step
    else:
        update = host._backend_update_step

    @functools.wraps(update)
    def backend_update_step(grads, trainable_variables, learning_rate):
        with torch.no_grad():
            update(grads, trainable_variables, learning_rate)

    return backend_update_step


def select_update_step(sing, host):
    """The `_backend_update_step` SING installs on a torch host."""
    generic = generic_update_step(host)
    host_fused = host._backend_update_step if isinstance(host, TorchParallelOptimizer) else None

    def backend_update_step(grads, trainable_variables, learning_rate):
        dtypes = {v.value.dtype for v in trainable_variables}
        usable = dtypes <= {torch.float32, torch.float64} and (
            sing._published_adam or host_fused is not None
        )
        if FAST_PATH and usable:
            with torch.no_grad():
                fused_update_step(sing, host, host_fused, grads, trainable_variables, learning_rate)
        else:
            generic(grads, trainable_variables, learning_rate)

    return backend_update_step


def all_finite(grads):
    """`keras_sing.sing.all_finite` batched: one `_foreach` max-norm pass.

    max|g| is NaN or inf exactly when `g` holds a NaN or an infinity (no
    overflow, unlike the L2 norm); empty tensors are finite."""
    grads = [None if g is None else convert_to_tensor(g) for g in grads]
    live = [g for g in grads if g is not None and g.numel()]
    if not live:
        return torch.tensor(True)
    max_abs = torch._foreach_norm(live, ord=math.inf)
    return torch.isfinite(torch.stack([m.float() for m in max_abs])).all()


def _as_tensor(x, like):
    x = x.value if hasattr(x, "value") and not isinstance(x, torch.Tensor) else x
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def fused_update_step(sing, host, host_fused, grads, keras_vars, learning_rate):
    """Steps (0)-(5) of SING (see keras_sing.sing.SING) for all variables."""
    index = [host._get_variable_index(v) for v in keras_vars]
    weights = [v.value for v in keras_vars]
    grads = [torch.as_tensor(g, dtype=w.dtype, device=w.device) for g, w in zip(grads, weights)]
    ref = weights[0]
    # t: the real step (torch runs this only on real updates, after the
    # host's accumulation cond), on the device: no synchronization.
    t = _as_tensor(host.iterations, ref) + 1
    lr = _as_tensor(learning_rate, ref)

    if sing.lookahead:
        # LookAhead touches S only at t = 1 and every k-th step, so the step
        # number is read on the host: one synchronization per step (the
        # finite check of on_nonfinite="skip"/"raise" already makes one),
        # where masked lerps would read and write S and W every step.
        slow = [sing._slow_weights[i].value for i in index]
        step = int(t.item())
        if step == 1:
            # (0) S <- W just before the first update
            torch._foreach_copy_(slow, weights)

    # (3) W <- W (1 - lr wd) for ndim > 1 variables the host decays
    if host.weight_decay:
        decayed = [w for w, v in zip(weights, keras_vars) if w.ndim > 1 and host._use_weight_decay(v)]
        if decayed:
            torch._foreach_mul_(decayed, 1 - lr * host.weight_decay)

    # (1)-(2) standardize, recording ||g||
    grads = _standardize_all(sing, index, grads)

    if sing._published_adam:
        _published_adam(sing, host, index, grads, weights, t, lr)
    else:
        host_fused(grads, keras_vars, learning_rate)

    if sing.lookahead and step % sing.lookahead_steps == 0:
        # (5) every k-th step: S <- S + alpha (W - S);  W <- S
        torch._foreach_lerp_(slow, weights, sing.lookahead_alpha)
        torch._foreach_copy_(weights, slow)


def _standardize_all(sing, index, grads):
    axes = [sing._standardization_axes[i] for i in index]
    out = []
    for g, a in zip(grads, axes):
        if a and sing.centralize:
            # g <- g - (g0 + mean(g - g0)), g0 each unit's first element:
            # transforms.centralize, in native torch (no Keras dispatch)
            first = tuple(slice(0, 1) if d in a else slice(None) for d in range(g.ndim))
            g0 = g[first]
            g = g - (g0 + (g - g0).mean(dim=a, keepdim=True))
        out.append(g)
    nonempty = [i for i, g in enumerate(out) if g.numel()]
    if not nonempty:
        return out
    live = [out[i] for i in nonempty]
    # ||g|| = s * ||g / s||, s = max|g|  (no overflow at 1e30, no underflow)
    scale = torch._foreach_norm(live, ord=math.inf)
    safe = [torch.where(s > 0, s, torch.ones_like(s)) for s in scale]
    norms = torch._foreach_mul(torch._foreach_norm(torch._foreach_div(live, safe)), scale)
    torch._foreach_copy_([sing._gradient_norms[index[i]].value for i in nonempty], [n.to(torch.float32) for n in norms])
    normalize = [sing._standardization_axes[index[i]] is not False and sing.normalize for i in nonempty]
    if any(normalize):
        div = [g for g, n in zip(live, normalize) if n]
        den = torch._foreach_add([m for m, n in zip(norms, normalize) if n], sing.epsilon)
        div = torch._foreach_div(div, den)
        it = iter(div)
        live = [next(it) if n else g for g, n in zip(live, normalize)]
    for i, g in zip(nonempty, live):
        out[i] = g
    return out


def _published_adam(sing, host, index, grads, weights, t, lr):
    """(4): Adam as published with SING, on the host's slots, batched."""
    b1, b2 = float(host.beta_1), float(host.beta_2)
    m = [host._momentums[i].value for i in index]
    v = [host._velocities[i].value for i in index]
    # m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
    torch._foreach_lerp_(m, grads, 1 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
    if host.amsgrad:
        v_hat = [host._velocity_hats[i].value for i in index]
        torch._foreach_maximum_(v_hat, v)
        v = v_hat
    # Bias corrections in float64: in float32, 1 - 0.999^t loses 1e-5 of
    # relative precision to cancellation, and would not match the moments'
    # exact (1 - b2) factor.
    t64 = t.to(torch.float64)
    bias_correction1 = (1 - b1**t64).to(t.dtype)
    bias_correction2 = (1 - b2**t64).to(t.dtype)
    # d <- sqrt(v) / sqrt(1 - b2^t)
    d = torch._foreach_sqrt(v)
    torch._foreach_div_(d, torch.sqrt(bias_correction2))
    if sing._softplus:
        # d <- softplus(beta d) / beta = d + log1p(exp(-beta d)) / beta  (d >= 0)
        beta = sing.softplus_beta
        tail = torch._foreach_mul(d, -beta)
        torch._foreach_exp_(tail)
        torch._foreach_log1p_(tail)
        torch._foreach_add_(d, tail, alpha=1.0 / beta)
    else:
        torch._foreach_add_(d, sing.epsilon)
    # W <- W - lr / (1 - b1^t) * m / d
    update = torch._foreach_div(m, d)
    torch._foreach_mul_(update, lr / bias_correction1)
    torch._foreach_sub_(weights, update)
