"""SING: the Stabilized and Normalized Gradient wrapper for Keras optimizers."""

import copy
import re

import keras
from keras import ops

from keras_sing import axes as axes_lib
from keras_sing import backend as backend_lib
from keras_sing import transforms

# The hosts whose update has Adam's second-moment denominator, which the
# softplus calibration replaces. `AdamW` subclasses `Adam` (and so do the
# fused torch classes Keras swaps in).
_ADAM_FAMILY = (keras.optimizers.Adam,)

# What a step with a NaN or inf gradient does (`on_nonfinite`).
_NONFINITE_MODES = ("skip", "raise", "ignore")

# Base-optimizer arguments SING does not take: they belong on the host.
_HOST_ARGUMENTS = (
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)


@keras.saving.register_keras_serializable(package="keras_sing")
class SING(keras.optimizers.Optimizer):
    """Stabilized and Normalized Gradient (SING), wrapping any Keras optimizer.

    SING standardizes each variable's gradient before the host optimizer
    sees it, and with an Adam-family host it also calibrates Adam's
    denominator with a softplus and adds LookAhead, which is the paper's full
    recipe. With it the authors train at ~10x AdamW's learning rate without
    loss spikes.

    Update rule, per variable `W` with gradient `G`, at real step `t`
    (after gradient accumulation and the cross-replica sum):

        (1) g = G - mean(G, fan-in axes)         centralize, ndim > 1
        (2) g = g / (||g||_2 + epsilon)          normalize, every variable
        (3) W = W * (1 - lr_t * weight_decay)    host's decay, ndim > 1 only
        (4) W = host_update(W, g)                for Adam/AdamW hosts:
              m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
              d = softplus(beta * sqrt(v / (1 - b2^t))) / beta
              W = W - lr_t / (1 - b1^t) * m / d
        (5) every k-th step: W = alpha W + (1 - alpha) S ;  S = W

    `S` is a copy of `W` taken just before the first update. Symbols map to
    arguments: `epsilon`, `beta = softplus_beta`, `k = lookahead_steps`,
    `alpha = lookahead_alpha`; `lr_t`, `b1`, `b2` and `weight_decay` are the
    host's.

    The host keeps its own hyper-parameters, learning-rate schedule,
    clipping, EMA, loss-scale factor and gradient accumulation;
    `SING.learning_rate` and `SING.iterations` are the host's. SING takes
    over the host's update step, so a host belongs to one SING.

    Args:
        optimizer: the host: a `keras.optimizers.Optimizer` instance, an
            identifier (`"adamw"`, `"sgd"`, `"lion"`, ...) or a serialized
            config. `None` means the paper's host, `AdamW(learning_rate=5e-3,
            weight_decay=0.0, beta_1=0.9, beta_2=0.999)`. Defaults to `None`.
        centralize: whether to apply (1). Defaults to `True`.
        normalize: whether to apply (2). Defaults to `True`.
        epsilon: the `epsilon` of (2), > 0. Defaults to `1e-8`.
        softplus: whether (4)'s denominator is the softplus calibration
            (`True`) or `sqrt(v_hat) + epsilon` (`False`), as in the published
            code. `None` turns it on for `Adam`/`AdamW` hosts and off for the
            rest; `True` with another host raises. `Adam`/`AdamW` hosts always
            take (4) on their own slots (the host's `epsilon` is not used);
            other hosts take their own update on the standardized gradient.
            Defaults to `None`.
        softplus_beta: `beta` of (4), > 0. Defaults to `50.0`.
        lookahead: whether to apply (5). Defaults to `True`.
        lookahead_steps: `k` of (5), an int >= 1, counted in real updates
            (after gradient accumulation). Defaults to `5`.
        lookahead_alpha: `alpha` of (5), in (0, 1]. Defaults to `0.5`.
        centralize_axes: override of (1)'s axes: a callable `variable ->
            tuple of axes or None`, or a dict `{regex: axes or None}` searched
            in `variable.path` (first match wins, others get the default; see
            `keras_sing.fan_in_axes(model)` for EinsumDense layers). The
            default, `keras_sing.default_centralize_axes`, is all axes but
            the last for ndim > 1, and per row for `embeddings` tables.
            Defaults to `None`.
        exclude: variables that skip (1)-(2) and get the host's gradient
            unchanged (the rest of the recipe still applies): a regex or list
            of regexes searched in `variable.path`, or a callable `variable
            -> bool`. Typical: LayerNorm scales, `exclude=r"layer_norm"`.
            Defaults to `None`.
        on_nonfinite: what a step whose gradients hold a NaN or an infinity
            does. `"skip"`: skip it whole (weights, host state: moments,
            iteration counter, accumulators, and LookAhead stay as they
            were) and count it in `skipped_steps`. `"raise"`: skip it the
            same way, then raise (`FloatingPointError` eagerly and on torch,
            `tf.errors.InvalidArgumentError` in a TF graph, a
            `JaxRuntimeError` carrying the message under `jax.jit`); TF
            steps compiled with XLA cannot raise from a tensor, so this
            needs `jit_compile=False` there. `"ignore"`: no check (saves one
            read of every gradient), non-finite values go through as with
            Keras's own optimizers. Defaults to `"skip"`.
        name: the optimizer's name. Defaults to `"sing"`.

    Example:

        model.compile(
            optimizer=keras_sing.SING(keras.optimizers.AdamW(1e-2)),
            loss="sparse_categorical_crossentropy",
        )

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
        - Yong et al., [Gradient Centralization](
          https://arxiv.org/abs/2004.01461), 2020.
        - Tong et al., [Calibrating the Adaptive Learning Rate to Improve
          Convergence of ADAM](https://arxiv.org/abs/1908.00700), 2019.
        - Zhang et al., [Lookahead Optimizer: k steps forward, 1 step back](
          https://arxiv.org/abs/1907.08610), 2019.
    """

    def __init__(
        self,
        optimizer=None,
        *,
        centralize=True,
        normalize=True,
        epsilon=1e-8,
        softplus=None,
        softplus_beta=50.0,
        lookahead=True,
        lookahead_steps=5,
        lookahead_alpha=0.5,
        centralize_axes=None,
        exclude=None,
        on_nonfinite="skip",
        name=None,
        **kwargs,
    ):
        _reject_host_arguments(kwargs)
        host = _resolve_host(optimizer)
        epsilon = _positive_float("epsilon", epsilon)
        softplus_beta = _positive_float("softplus_beta", softplus_beta)
        if isinstance(lookahead_steps, bool) or not isinstance(
            lookahead_steps, int
        ) or lookahead_steps < 1:
            raise ValueError(
                "Argument `lookahead_steps` must be an int >= 1 (1 syncs every "
                f"step). Received: lookahead_steps={lookahead_steps!r}"
            )
        if not isinstance(lookahead_alpha, (int, float)) or not (
            0.0 < lookahead_alpha <= 1.0
        ):
            raise ValueError(
                "Argument `lookahead_alpha` must be a float in (0, 1] (1 keeps "
                "the fast weights; use `lookahead=False` to turn LookAhead "
                f"off). Received: lookahead_alpha={lookahead_alpha!r}"
            )
        if softplus not in (None, True, False):
            raise ValueError(
                "Argument `softplus` must be None, True or False. "
                f"Received: softplus={softplus!r}"
            )
        if softplus and not isinstance(host, _ADAM_FAMILY):
            raise ValueError(
                "Argument `softplus=True` needs a host with Adam's "
                "second-moment denominator: keras.optimizers.Adam or "
                f"keras.optimizers.AdamW. Received a {type(host).__name__} "
                "host; use softplus=None or False with it."
            )
        if on_nonfinite not in _NONFINITE_MODES:
            raise ValueError(
                "Argument `on_nonfinite` must be one of "
                f"{', '.join(repr(m) for m in _NONFINITE_MODES)}. "
                f"Received: on_nonfinite={on_nonfinite!r}"
            )
        _check_rule("centralize_axes", centralize_axes, dict)
        _check_rule("exclude", exclude, (str, list, tuple))

        super().__init__(learning_rate=0.0, name=name or "sing")
        self.inner_optimizer = host
        self.centralize = bool(centralize)
        self.normalize = bool(normalize)
        self.epsilon = epsilon
        self.softplus = softplus
        self.softplus_beta = softplus_beta
        self.lookahead = bool(lookahead)
        self.lookahead_steps = lookahead_steps
        self.lookahead_alpha = float(lookahead_alpha)
        self.centralize_axes = centralize_axes
        self.exclude = exclude
        self.on_nonfinite = on_nonfinite
        self._finite_already_checked = False
        self._standardized = {}
        self._lookahead_deferred = False
        self._step_finite = None
        self._selected_in_step = set()
        # Adam-family hosts get the published Adam step (4); others their own.
        self._published_adam = isinstance(host, _ADAM_FAMILY)
        self._softplus = self._published_adam if softplus is None else softplus
        self._take_over_host_update(host)

    # ------------------------------------------------------------------ #
    # Wiring: SING acts inside the host's update, where it must act.
    # ------------------------------------------------------------------ #

    def _take_over_host_update(self, host):
        """Routes the host's per-variable update step through SING.

        Standardization must see the gradient the host applies: after the
        host's gradient accumulation and, under `tf.distribute`, after the
        cross-replica sum, both of which happen inside the host's `apply`
        just before its per-variable `update_step`. Keras has no hook there,
        so SING replaces the host instance's `update_step` (and its weight
        decay, which SING applies per variable, after seeding LookAhead, as
        the paper does). On torch, Keras's fused `Adam`/`SGD`/... classes
        bypass `update_step`, so SING batches its whole step with
        `torch._foreach_*` kernels there, or sends the host through its
        non-fused path (`keras_sing.backend.torch`).
        """
        if getattr(host, "_sing_hosted", False):
            raise ValueError(
                "Argument `optimizer` is already the host of another SING "
                "optimizer; a host belongs to one SING. Create a new host, e.g. "
                "SING(keras.optimizers.AdamW(...))."
            )
        host._sing_hosted = True
        self._host_update_step = host.update_step
        host.update_step = self._update_step
        host._apply_weight_decay = _no_weight_decay
        if keras.backend.backend() == "torch":
            from keras_sing.backend import torch as torch_backend

            host._backend_update_step = torch_backend.select_update_step(
                self, host
            )

    def build(self, var_list):
        """Creates LookAhead's slow weights, then builds the host."""
        var_list = list(var_list)
        if self.lookahead:
            self._slow_weights = tuple(
                None
                if getattr(v, "overwrite_with_gradient", False)
                else self.add_variable_from_reference(v, name="lookahead_slow")
                for v in var_list
            )
        self._standardization_axes = tuple(
            self._axes_for(v) for v in var_list
        )
        # ||g|| of each variable's last real update, which SING computes
        # anyway (read by keras_sing.callbacks.GradientNormMonitor).
        self._gradient_norms = tuple(
            self.add_variable((), dtype="float32", name="gradient_norm")
            for _ in var_list
        )
        self._variable_paths = tuple(v.path for v in var_list)
        self._skipped_steps = self.add_variable(
            (), dtype="int32", name="skipped_steps"
        )
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        super().build(var_list)

    def _axes_for(self, variable):
        """(1)'s axes for `variable`, or `False` if it is excluded."""
        if _matches(self.exclude, variable):
            return False
        if not self.centralize:
            return None
        ndim = len(variable.shape)
        rule = self.centralize_axes
        if callable(rule):
            axes = rule(variable)
        elif isinstance(rule, dict):
            axes = next(
                (a for p, a in rule.items() if re.search(p, variable.path)),
                axes_lib.default_centralize_axes(variable),
            )
        else:
            axes = axes_lib.default_centralize_axes(variable)
        return axes_lib.normalize_axes(axes, ndim, variable.path)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "SING must be built before `apply` is called without "
                    "variables: call `optimizer.build(trainable_variables)`."
                )
            self.build(trainable_variables)
        if self.on_nonfinite == "ignore" or self._finite_already_checked:
            self.inner_optimizer.apply(grads, trainable_variables)
        elif keras.backend.backend() == "tensorflow" and _tf_replica_context():
            from keras_sing.backend import tensorflow as tf_backend

            tf_backend.distributed_apply_if_finite(self, grads, trainable_variables)
        else:
            finite = all_finite(grads)
            backend_lib.cond(
                finite,
                lambda: self.inner_optimizer.apply(grads, trainable_variables),
                self._count_skipped_step,
            )
            # read after the skip: a skipped step left the counter as it was
            self._raise_if_requested(
                finite, lambda: ops.add(_read(self.iterations), 1)
            )

    def _raise_if_requested(self, finite, step_fn):
        """With `on_nonfinite="raise"`, raises (after the skip) when not
        `finite`; see `keras_sing.backend.raise_if_false`. `step_fn()` gives
        the bad step's number, for the message; it is called in this mode
        only, so the other modes add nothing to the step."""
        if self.on_nonfinite != "raise":
            return
        backend_lib.raise_if_false(
            finite,
            step_fn(),
            "SING: a gradient holds NaN or inf at step {step}; the step was "
            "skipped (weights and optimizer state unchanged) and training "
            "stops because on_nonfinite='raise'. Look at this batch's inputs "
            "and loss, or use on_nonfinite='skip' to skip such steps and go "
            "on.",
        )

    def _count_skipped_step(self):
        self._skipped_steps.assign_add(1)

    @property
    def skipped_steps(self):
        """How many steps were skipped for non-finite gradients (a variable;
        0 before the optimizer is built)."""
        return self._skipped_steps if self.built else 0

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """JAX: the step as a pure function, skipped when not finite.

        Finiteness is decided first, from the gradients' norms (computed
        ahead and reused by the update) or, with accumulation, clipping or
        a loss-scale factor, from the gradients. Each new value is then
        selected against the old one with `where(finite, new, old)`, which
        XLA fuses into the update's own elementwise pass: in the Adam step
        where each slot is computed (`_if_finite`), for other hosts after
        their step. A `cond` over the whole step would copy every buffer it
        passes through (measured ~1.5x slower). LookAhead's seed and sync
        follow, each under one `cond` for all variables
        (`_lookahead_after_step`)."""
        self._check_same_variables(trainable_variables)
        # LossScaleOptimizer passes variables, read in its StatelessScope.
        optimizer_variables = [_read(v) for v in optimizer_variables]
        trainable_variables = [_read(v) for v in trainable_variables]
        check = self.on_nonfinite != "ignore"
        # Finiteness is known before the update, so that each slot is
        # selected where it is computed (`_if_finite`).
        self._standardized = {}
        if check and self._norms_tell_finiteness():
            finite = self._standardize_ahead(grads)
        else:
            finite = all_finite(grads) if check else None
        self._step_finite = finite
        self._finite_already_checked = True  # not again in apply()
        self._lookahead_deferred = self._can_defer_lookahead()
        try:
            new_trainable, new_optimizer = super().stateless_apply(
                optimizer_variables, grads, trainable_variables
            )
        finally:
            self._finite_already_checked = False
            self._standardized = {}
            self._step_finite = None
            selected, self._selected_in_step = self._selected_in_step, set()
            deferred, self._lookahead_deferred = self._lookahead_deferred, False
        if check:
            new_trainable = self._select_unselected(
                finite,
                new_trainable,
                trainable_variables,
                self._trainable_variables,
                selected,
            )
            new_optimizer = self._select_unselected(
                finite, new_optimizer, optimizer_variables, self.variables, selected
            )
            # skipped_steps <- skipped_steps + (not finite)
            skipped_index = _index_of(self.variables, self._skipped_steps)
            skipped = optimizer_variables[skipped_index]
            new_optimizer[skipped_index] = ops.add(
                skipped, ops.cast(ops.logical_not(finite), skipped.dtype)
            )
        if deferred:
            self._lookahead_after_step(
                finite,
                (trainable_variables, optimizer_variables),
                (new_trainable, new_optimizer),
            )
        if check:
            self._raise_if_requested(
                finite, lambda: self._step_from(optimizer_variables)[0]
            )
        return new_trainable, new_optimizer

    @staticmethod
    def _select_unselected(finite, new_values, old_values, variables, selected):
        """`where(finite, new, old)` for the values of the variables the
        step did not already select (`selected`, see `_if_finite`)."""
        return [
            n if id(v) in selected else ops.where(finite, n, o)
            for n, o, v in zip(new_values, old_values, variables)
        ]

    def _can_defer_lookahead(self):
        """Whether `stateless_apply` does LookAhead after the host's step
        rather than inside each variable's update: not with the host's EMA,
        which averages the weights inside the step, after (5)."""
        return self.lookahead and not self.inner_optimizer.use_ema

    def _lookahead_after_step(self, finite, old, new):
        """JAX: (0) and (5) for all variables, on `stateless_apply`'s values.

        `old` and `new` are `(trainable values, optimizer values)` before and
        after the step; `new`'s lists are updated in place. Each of the seed
        `S <- W_old` (at t = 1) and the sync (every k-th step) is one `cond`
        over all variables, so the other steps neither read nor write `S`,
        and `W` is computed once: with per-element masks instead, XLA
        recomputes the whole Adam step for each of its two outputs (`W`,
        `S`), measured 2x slower on ViT-Ti/16's parameter set on CPU."""
        (old_trainable, old_optimizer), (new_trainable, new_optimizer) = old, new
        step, taken = self._step_from(old_optimizer)
        taken = ops.convert_to_tensor(taken)
        if finite is not None:
            taken = ops.logical_and(taken, finite)
        pairs = [
            (i, _index_of(self.variables, s))
            for i, s in enumerate(self._slow_weights)
            if s is not None
        ]
        if not pairs:
            return
        slow = [old_optimizer[j] for _, j in pairs]
        fast_before = [old_trainable[i] for i, _ in pairs]
        fast = [new_trainable[i] for i, _ in pairs]
        # (0) S <- W just before the first real update
        first = ops.logical_and(taken, ops.equal(step, 1))
        slow = backend_lib.cond(
            first,
            lambda: [ops.cast(w, s.dtype) for w, s in zip(fast_before, slow)],
            lambda: list(slow),
        )
        # (5) every k-th real step: W <- S + alpha (W - S);  S <- W
        sync = ops.logical_and(
            taken, ops.equal(ops.mod(step, self.lookahead_steps), 0)
        )
        fast, slow = backend_lib.cond(
            sync,
            lambda: self._lookahead_merge_all(fast, slow),
            lambda: (list(fast), list(slow)),
        )
        for (i, j), w, s in zip(pairs, fast, slow):
            new_trainable[i], new_optimizer[j] = w, s

    def _lookahead_merge_all(self, fast, slow):
        """(5) for lists of values: `(merged W, merged S)`."""
        merged = [
            transforms.lookahead_merge(w, ops.cast(s, w.dtype), self.lookahead_alpha)
            for w, s in zip(fast, slow)
        ]
        return merged, [ops.cast(m, s.dtype) for m, s in zip(merged, slow)]

    def _norms_tell_finiteness(self):
        """Whether the gradients' own norms can stand in for the finite
        check (saving a read of every gradient): each is NaN or inf exactly
        when its gradient holds a NaN or an inf, see `transforms.l2_norm`.
        Only where the host hands `update_step` the gradients it was given:
        not with gradient accumulation, clipping or a loss-scale factor, nor
        with `overwrite_with_gradient` variables (which skip the update)."""
        host = self.inner_optimizer
        return not (
            host.gradient_accumulation_steps
            or host.clipnorm
            or host.clipvalue
            or host.global_clipnorm
            or host.loss_scale_factor
            or any(
                getattr(v, "overwrite_with_gradient", False)
                for v in self._trainable_variables
            )
        )

    def _standardize_ahead(self, grads):
        """JAX: (1)-(2) for every gradient before the host's update, kept in
        `_standardized` for `_update_step` (which gets these same gradient
        objects), and whether all their norms are finite."""
        norms = []
        for index, gradient in enumerate(grads):
            if gradient is None:
                continue
            standardized = self._standardize(index, gradient)
            self._standardized[index] = (gradient, standardized)
            norms.append(standardized[1])
        return all_finite(norms)

    def _standardize(self, index, gradient):
        """(1)-(2) for variable `index`: `(standardized gradient, ||g||)`,
        the raw gradient and its norm for `exclude`d variables."""
        axes = self._standardization_axes[index]
        if keras.backend.backend() == "tensorflow":
            from keras_sing.backend import tensorflow as tf_backend

            gradient = tf_backend.densify(gradient)
        if axes is False:
            dtype = transforms.compute_dtype(gradient.dtype)
            return gradient, transforms.l2_norm(ops.cast(gradient, dtype))
        return transforms.standardize_with_norm(
            gradient,
            axes,
            self.epsilon,
            centralize_=self.centralize,
            normalize_=self.normalize,
        )

    def _check_same_variables(self, trainable_variables):
        built_with = len(self._trainable_variables) if self.built else None
        if built_with is not None and len(trainable_variables) != built_with:
            raise ValueError(
                f"SING was built for {built_with} trainable variables and "
                f"received {len(trainable_variables)}: the model's trainable "
                "variables changed after the optimizer was built (e.g. a "
                "layer was unfrozen). Like Keras's own optimizers, SING "
                "serves the variables it was built with: compile again with "
                "a new optimizer, e.g. model.compile(optimizer=keras_sing."
                "SING(keras.optimizers.AdamW(...)), ...)."
            )

    def _step_from(self, optimizer_variables):
        """`_real_step`, read from `stateless_apply`'s values (the variables
        themselves hold no value inside JAX's `fit`)."""
        host = self.inner_optimizer
        return self._real_step_of(
            optimizer_variables[_index_of(self.variables, host._iterations)]
        )

    # ------------------------------------------------------------------ #
    # The update, per variable.
    # ------------------------------------------------------------------ #

    def _update_step(self, gradient, variable, learning_rate):
        """Steps (1)-(5) for one variable, in the host's place."""
        host = self.inner_optimizer
        index = host._get_variable_index(variable)
        step, is_update = self._real_step()
        weight_before = _read(variable)  # for a skipped step (_if_finite)
        # JAX's stateless_apply may do LookAhead after the whole step
        lookahead = self.lookahead and not self._lookahead_deferred
        if lookahead:
            slow = self._seeded_slow_weight(index, variable, step, is_update)
        if host.weight_decay and len(variable.shape) > 1:
            self._decay_weight(variable, learning_rate)
        ahead = self._standardized.get(index)
        if ahead is not None and ahead[0] is gradient:
            gradient, norm = ahead[1]
        else:
            gradient, norm = self._standardize(index, gradient)
        self._record_gradient_norm(index, norm, is_update)
        if self._published_adam:
            self._published_adam_step(
                gradient, variable, learning_rate, index, weight_before
            )
        else:
            self._host_update_step(gradient, variable, learning_rate)
        if lookahead:
            self._lookahead_sync(index, variable, slow, step, is_update)

    def _real_step(self):
        """`(t, is_update)`: the 1-based real update count, and whether this
        call really updates (False on gradient-accumulation micro-steps,
        which JAX traces through and then discards)."""
        return self._real_step_of(_read(self.inner_optimizer._iterations))

    def _real_step_of(self, micro_steps):
        """`_real_step` from the host's micro-step counter's value."""
        accumulation = self.inner_optimizer.gradient_accumulation_steps
        if not accumulation:
            return ops.add(micro_steps, 1), True
        step = ops.add(ops.floor_divide(micro_steps, accumulation), 1)
        is_update = ops.equal(ops.mod(ops.add(micro_steps, 1), accumulation), 0)
        return step, is_update

    def _record_gradient_norm(self, index, norm, is_update):
        slot = self._gradient_norms[index]
        norm = ops.cast(norm, "float32")
        if is_update is not True:
            norm = ops.where(is_update, norm, _read(slot))
        self.inner_optimizer.assign(slot, norm)

    @property
    def gradient_norm_variables(self):
        """`[(variable.path, norm_variable), ...]`: each norm variable holds
        `||g||_2` of its variable's gradient at the last real update (after
        centralization, before normalization; the raw gradient's norm for
        `exclude`d variables)."""
        if not self.built:
            return []
        return list(zip(self._variable_paths, self._gradient_norms))

    def gradient_norms(self):
        """`{variable.path: float}`, the values of `gradient_norm_variables`."""
        return {
            path: float(ops.convert_to_numpy(v))
            for path, v in self.gradient_norm_variables
        }

    def _seeded_slow_weight(self, index, variable, step, is_update):
        """`S`, or `W` just before the first real update (`S <- W` then).

        Returned as a value, not assigned: `_lookahead_sync` writes `S` once
        per step. A `cond`, so that compiled steps copy `W` only at t = 1."""
        slow = _read(self._slow_weights[index])
        first = ops.logical_and(ops.equal(step, 1), is_update)
        # a copy: on torch, a variable's value is its storage, which the
        # update then changes in place
        return backend_lib.cond(
            first,
            lambda: ops.copy(ops.cast(_read(variable), slow.dtype)),
            lambda: slow,
        )

    def _decay_weight(self, variable, learning_rate):
        # W <- W * (1 - lr * weight_decay)     (decoupled, ndim > 1 only)
        host = self.inner_optimizer
        if not host._use_weight_decay(variable):
            return
        w = _read(variable)
        lr = ops.cast(learning_rate, w.dtype)
        wd = ops.cast(host.weight_decay, w.dtype)
        host.assign(variable, ops.subtract(w, w * wd * lr))

    def _published_adam_step(
        self, gradient, variable, learning_rate, index, weight_before
    ):
        """Step (4): Adam as published with SING, on the host's slots.

        It differs from Keras's `Adam.update_step` in the denominator: the
        bias correction divides `sqrt(v)` before the softplus (or before
        `+ epsilon`, SING's, when `softplus=False`), where Keras adds its own
        `epsilon` to the uncorrected `sqrt(v)`.
        """
        host = self.inner_optimizer
        dtype = transforms.compute_dtype(variable.dtype)
        g = ops.cast(gradient, dtype)
        lr = ops.cast(learning_rate, dtype)
        t = ops.cast(ops.add(_read(host.iterations), 1), dtype)
        b1 = ops.cast(host.beta_1, dtype)
        b2 = ops.cast(host.beta_2, dtype)
        m_var = host._momentums[index]
        v_var = host._velocities[index]
        # m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
        m = ops.cast(_read(m_var), dtype)
        v = ops.cast(_read(v_var), dtype)
        m_new = ops.add(ops.multiply(m, b1), ops.multiply(g, 1 - b1))
        v_new = ops.add(ops.multiply(v, b2), ops.multiply(ops.square(g), 1 - b2))
        m = self._if_finite(m_new, m, m_var)
        v = self._if_finite(v_new, v, v_var)
        host.assign(m_var, m)
        host.assign(v_var, v)
        if host.amsgrad:
            # v_max <- max(v_max, v), used in v's place
            v_hat_var = host._velocity_hats[index]
            v_hat = ops.cast(_read(v_hat_var), dtype)
            v = self._if_finite(ops.maximum(v_hat, v), v_hat, v_hat_var)
            host.assign(v_hat_var, v)
        # d <- sqrt(v) / sqrt(1 - b2^t)
        d = ops.divide(ops.sqrt(v), ops.sqrt(1 - ops.power(b2, t)))
        if self._softplus:
            # d <- softplus(beta * d) / beta
            d = transforms.softplus_calibrate(d, self.softplus_beta)
        else:
            # d <- d + eps
            d = ops.add(d, self.epsilon)
        # W <- W - lr / (1 - b1^t) * m / d
        step_size = ops.divide(lr, 1 - ops.power(b1, t))
        w = ops.cast(_read(variable), dtype)
        host.assign(
            variable,
            self._if_finite(
                ops.subtract(w, step_size * ops.divide(m, d)),
                ops.cast(weight_before, dtype),
                variable,
            ),
        )

    def _if_finite(self, new, old, variable):
        """`where(finite, new, old)` when JAX's `stateless_apply` knows the
        step's finiteness before the update (`_step_finite`), else `new`.

        Selecting each slot where it is computed (and not again after the
        step) lets XLA compute `W` from the stored `m` and `v`, as for
        Keras's AdamW; a select after the step made it recompute them from
        their old values in `W`'s pass, and copy those (~1.5x slower on
        CPU)."""
        if self._step_finite is None:
            return new
        self._selected_in_step.add(id(variable))
        return ops.where(self._step_finite, new, old)

    def _lookahead_sync(self, index, variable, slow, step, is_update):
        """(5) for one variable: every k-th real step, `W <- S + alpha (W -
        S)` and `S <- W`. A `cond`, not per-element masks: compiled, the
        other steps leave `S` untouched, and XLA computes the host's new `W`
        once instead of once per output (see `_lookahead_after_step`)."""
        sync = ops.logical_and(
            ops.equal(ops.mod(step, self.lookahead_steps), 0), is_update
        )
        fast = _read(variable)
        (fast,), (slow,) = backend_lib.cond(
            sync,
            lambda: self._lookahead_merge_all([fast], [slow]),
            lambda: ([fast], [slow]),
        )
        host = self.inner_optimizer
        host.assign(variable, fast)
        host.assign(self._slow_weights[index], slow)

    # ------------------------------------------------------------------ #
    # The host's state and settings, seen through SING.
    # ------------------------------------------------------------------ #

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        self.inner_optimizer.exclude_from_weight_decay(
            var_list=var_list, var_names=var_names
        )

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        # Not super().get_config(): the base arguments are the host's.
        return {
            "name": self.name,
            "optimizer": keras.optimizers.serialize(self.inner_optimizer),
            "centralize": self.centralize,
            "normalize": self.normalize,
            "epsilon": self.epsilon,
            "softplus": self.softplus,
            "softplus_beta": self.softplus_beta,
            "lookahead": self.lookahead,
            "lookahead_steps": self.lookahead_steps,
            "lookahead_alpha": self.lookahead_alpha,
            "centralize_axes": _serialize_rule(self.centralize_axes),
            "exclude": _serialize_rule(self.exclude),
            "on_nonfinite": self.on_nonfinite,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)  # deserialize() edits nested dicts
        host = keras.optimizers.deserialize(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        if "skip_nonfinite" in config:  # keras_sing 0.1.0's name for it
            skip = config.pop("skip_nonfinite")
            config.setdefault("on_nonfinite", "skip" if skip else "ignore")
        for key in ("centralize_axes", "exclude"):
            config[key] = _deserialize_rule(config.get(key), custom_objects)
        return cls(host, **config)


# ---------------------------------------------------------------------- #
# Helpers.
# ---------------------------------------------------------------------- #


def all_finite(grads):
    """A scalar boolean: no gradient holds a NaN or an infinity."""
    if keras.backend.backend() == "torch":
        from keras_sing.backend import torch as torch_backend

        if torch_backend.FAST_PATH:
            return torch_backend.all_finite(grads)
    # sum(0 * g) is 0 for a finite g and NaN if g holds a NaN or an inf
    # (inf * 0 = NaN), and cannot overflow: a plain float reduction, which
    # XLA fuses better than a reduction of booleans.
    grads = [_values_of(g) for g in grads if g is not None]
    sums = [ops.sum(ops.multiply(g, 0)) for g in grads]
    if not sums:
        return ops.convert_to_tensor(True)
    return ops.isfinite(ops.sum(ops.stack([ops.cast(x, "float32") for x in sums])))


def _values_of(gradient):
    """The values of a `tf.IndexedSlices` gradient, or the gradient."""
    if hasattr(gradient, "indices") and hasattr(gradient, "dense_shape"):
        return gradient.values
    return gradient


def _index_of(variables, variable):
    return next(i for i, v in enumerate(variables) if v is variable)


def _tf_replica_context():
    """Whether `apply` runs per replica under a tf.distribute strategy."""
    from keras_sing.backend import tensorflow as tf_backend

    return tf_backend.in_replica_context()


def _read(variable):
    """The tensor value of a `keras.Variable` (backend variables pass)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _no_weight_decay(variables):
    """Stands in for the host's `_apply_weight_decay`: SING decays in (3)."""
    del variables


def _reject_host_arguments(kwargs):
    for arg in kwargs:
        if arg in _HOST_ARGUMENTS:
            raise ValueError(
                f"SING does not take `{arg}`: set it on the host optimizer, "
                f"e.g. SING(keras.optimizers.AdamW({arg}=...))."
            )
    if kwargs:
        raise TypeError(
            f"SING got unexpected arguments: {sorted(kwargs)}. See "
            "help(keras_sing.SING) for the accepted ones."
        )


def _resolve_host(optimizer):
    if optimizer is None:
        return keras.optimizers.AdamW(
            learning_rate=5e-3, weight_decay=0.0, beta_1=0.9, beta_2=0.999
        )
    if isinstance(optimizer, SING):
        raise ValueError(
            "Argument `optimizer` cannot be a SING optimizer: SING standardizes "
            "gradients once. Pass its host instead, e.g. SING(AdamW(...))."
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "Argument `optimizer` cannot be a LossScaleOptimizer. Wrap the "
            "other way round, LossScaleOptimizer(SING(AdamW(...))), or set "
            "the `mixed_float16` policy and let `compile` do it."
        )
    if isinstance(optimizer, (str, dict)):
        try:
            optimizer = keras.optimizers.get(optimizer)
        except ValueError as error:
            raise ValueError(
                f"Argument `optimizer` could not be interpreted: {optimizer!r}. "
                "Use a keras.optimizers.Optimizer instance or an identifier "
                "such as 'adamw', 'adam', 'sgd', 'lion'."
            ) from error
        return _resolve_host(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "Argument `optimizer` must be a keras.optimizers.Optimizer "
            "instance, an identifier string ('adamw', 'sgd', ...) or None. "
            f"Received: {optimizer!r} of type {type(optimizer).__name__}."
        )
    return optimizer


def _positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        value > 0
    ):
        raise ValueError(
            f"Argument `{name}` must be a float > 0. Received: {name}={value!r}"
        )
    return float(value)


def _check_rule(name, rule, accepted):
    if rule is None or callable(rule) or isinstance(rule, accepted):
        return
    raise TypeError(
        f"Argument `{name}` must be None, a callable taking a variable, or a "
        f"{' or '.join(t.__name__ for t in _as_tuple(accepted))}. "
        f"Received: {rule!r}"
    )


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _matches(rule, variable):
    """Whether `variable` is selected by an `exclude` rule."""
    if rule is None:
        return False
    if callable(rule):
        return bool(rule(variable))
    patterns = [rule] if isinstance(rule, str) else rule
    return any(re.search(p, variable.path) for p in patterns)


def _serialize_rule(rule):
    if callable(rule):
        return keras.saving.serialize_keras_object(rule)
    if isinstance(rule, tuple):
        return list(rule)
    return rule


def _deserialize_rule(rule, custom_objects):
    if isinstance(rule, dict) and "class_name" in rule and "config" in rule:
        return keras.saving.deserialize_keras_object(
            rule, custom_objects=custom_objects
        )
    if isinstance(rule, dict):
        return {k: None if a is None else tuple(a) for k, a in rule.items()}
    return rule
