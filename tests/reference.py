"""A float64 NumPy statement of SING (docs/algorithm.md), independent of keras_sing.

Transcribed from the paper's published PyTorch optimizer, line by line, in
Keras layout (output axis last). It never imports keras, and the library
never imports it: every numeric test compares the library against it.
"""

import numpy as np


def keras_fan_in_axes(shape):
    """All axes but the last for ndim > 1, else none (docs/algorithm.md, fan-in axes)."""
    return tuple(range(len(shape) - 1)) if len(shape) > 1 else ()


def standardize(grad, axes, eps=1e-8, centralize=True, normalize=True):
    """Standardization (docs/algorithm.md): centralize over `axes`, then divide by the L2 norm."""
    g = np.asarray(grad, dtype=np.float64)
    if centralize and axes:
        g = g - g.mean(axis=tuple(axes), keepdims=True)
    if normalize:
        # Scaled norm: the float64 sum of squares would still overflow at 1e160.
        s = np.abs(g).max() if g.size else 0.0
        norm = s * np.sqrt(np.sum((g / s) ** 2)) if s > 0 else 0.0
        g = g / (norm + eps)
    return g


def softplus(x, beta):
    """softplus(beta * x) / beta, as torch.nn.functional.softplus."""
    z = beta * x
    return (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) / beta


class ReferenceSING:
    """AdamW + SING + softplus + LookAhead (docs/algorithm.md), float64.

    `params` maps names to arrays (Keras layout); `axes` maps names to the
    centralization axes (default: `keras_fan_in_axes`).
    """

    def __init__(
        self,
        params,
        lr=5e-3,
        betas=(0.9, 0.999),
        weight_decay=0.0,
        eps=1e-8,
        softplus=True,
        beta_softplus=50.0,
        grad_central=True,
        grad_norm=True,
        lookahead_active=True,
        la_mergetime=5,
        la_alpha=0.5,
        axes=None,
    ):
        self.w = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self.lr = lr
        self.b1, self.b2 = betas
        self.wd = weight_decay
        self.eps = eps
        self.softplus = softplus
        self.beta_softplus = beta_softplus
        self.grad_central = grad_central
        self.grad_norm = grad_norm
        self.lookahead = lookahead_active
        self.k = la_mergetime
        self.alpha = la_alpha
        self.axes = {
            k: (axes or {}).get(k, keras_fan_in_axes(v.shape))
            for k, v in self.w.items()
        }
        self.m = {k: np.zeros_like(v) for k, v in self.w.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.w.items()}
        self.slow = None
        self.t = 0

    def step(self, grads, lr=None):
        lr = self.lr if lr is None else lr
        if self.lookahead and self.slow is None:
            # S is a copy of W taken just before the first update.
            self.slow = {k: v.copy() for k, v in self.w.items()}
        self.t += 1
        t = self.t
        for k, w in self.w.items():
            g = standardize(
                grads[k],
                self.axes[k],
                self.eps,
                centralize=self.grad_central,
                normalize=self.grad_norm,
            )
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            if self.wd and w.ndim > 1:
                w = w * (1 - lr * self.wd)
            d = np.sqrt(self.v[k]) / np.sqrt(1 - self.b2**t)
            if self.softplus:
                d = softplus(d, self.beta_softplus)
            else:
                d = d + self.eps
            self.w[k] = w - lr / (1 - self.b1**t) * self.m[k] / d
        if self.lookahead and t % self.k == 0:
            for k in self.w:
                self.w[k] = self.alpha * self.w[k] + (1 - self.alpha) * self.slow[k]
                self.slow[k] = self.w[k].copy()
        return self.w


def keras_adam_step(w, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-7):
    """One step of Keras's stock Adam (eps added to the uncorrected sqrt(v))."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    return w - alpha * m / (np.sqrt(v) + eps), m, v
