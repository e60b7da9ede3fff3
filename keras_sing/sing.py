"""SING: the Stabilized and Normalized Gradient wrapper for Keras optimizers.

The public contract: arguments, build, the wiring to the host, config. The
math is in `keras_sing.transforms`; what touches Keras internals is in
`keras_sing._host`.
"""

import copy
import math
import numbers
import re
import warnings

import keras
import numpy as np
from keras import ops

from keras_sing import _host
from keras_sing import axes as axes_lib
from keras_sing import backend as backend_lib

# The hosts whose update has Adam's second-moment denominator, which the
# softplus calibration replaces. `AdamW` subclasses `Adam` (and so do the
# fused torch classes Keras swaps in).
_ADAM_FAMILY = (keras.optimizers.Adam,)


def _takes_adam_step(host):
    """Whether SING replaces `host`'s update by the published Adam step
    (4): an Adam/AdamW whose `update_step` is Keras's own. A subclass that
    overrides it keeps its own step, as any other host."""
    return (
        isinstance(host, _ADAM_FAMILY)
        and type(host).update_step is keras.optimizers.Adam.update_step
    )


# What a step with a NaN or inf gradient does (`on_nonfinite`).
_NONFINITE_MODES = ("skip", "raise", "ignore")

_WEIGHT_DECAY_MODES = ("paper", "host")

# Base-optimizer settings that belong to the host: SING does not take them,
# and reading or setting them on SING reads or sets the host's.
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
        (3) W = W * (1 - lr_t * weight_decay)    host's decay (ndim > 1 only,
                                                 as the paper; see
                                                 `weight_decay_mode`)
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
            other hosts, and `Adam` subclasses that override `update_step`,
            take their own update on the standardized gradient.
            Defaults to `None`.
        softplus_beta: `beta` of (4), > 0. Defaults to `50.0`.
        lookahead: whether to apply (5). Defaults to `True`.
        lookahead_steps: `k` of (5), an int >= 1, counted in real updates
            (after gradient accumulation). Defaults to `5`.
        lookahead_alpha: `alpha` of (5), in (0, 1]. Defaults to `0.5`.
        centralize_axes: override of (1)'s axes: a callable `variable ->
            tuple of axes or None`, or a dict `{regex: axes or None}` searched
            in `variable.path` (first match wins, others get the default;
            a regex found in no path warns once, at `build`).
            The default is the published fan-in of each variable's layer
            (docs/algorithm.md has the table: one mean per output unit of
            `Dense`/convolution kernels, per filter of depthwise kernels,
            per row of embedding tables, over the contracted axes of
            `EinsumDense`/attention kernels, none for biases and 1-D
            normalization scales). SING reads the layers of the model that
            builds it (`fit`, `train_on_batch`, `load_model`); in a custom
            loop, where it sees only variables, pass
            `keras_sing.fan_in_axes(model)`, or SING guesses from each
            variable's rank and name and warns once, naming the variables
            whose guess may be wrong. A fan-in of size 1 (a `Dense` on one
            input feature) has no mean to remove: centralizing would zero
            the gradient, so SING only normalizes such a variable, and
            warns once. Defaults to `None`.
        exclude: variables that skip (1)-(2) and get the host's gradient
            unchanged (the rest of the recipe still applies): a regex or list
            of regexes searched in `variable.path`, or a callable `variable
            -> bool`. Typical: LayerNorm scales, `exclude=r"layer_norm"`.
            A regex found in no variable's path warns once, at `build`.
            Defaults to `None`.
        on_nonfinite: what a step whose gradients hold a NaN or an infinity
            does. `"skip"`: skip it whole (weights, host state: moments,
            iteration counter, accumulators, and LookAhead stay as they
            were) and count it in `skipped_steps`. `"raise"`: skip it the
            same way, then raise (`FloatingPointError` eagerly and on torch,
            `tf.errors.InvalidArgumentError` in a TF graph, a
            `JaxRuntimeError` carrying the message under `jax.jit`); TF
            steps compiled with XLA cannot raise from a tensor, so this
            needs `jit_compile=False` there. `"ignore"`: no check (saves the
            skip's `cond`, and with accumulation, clipping or a loss-scale
            factor one read of every gradient), non-finite values go
            through as with Keras's own optimizers. Defaults to `"skip"`.
        weight_decay_mode: which variables the host's decoupled weight
            decay (3) applies to. `"paper"`: as the published code, only
            variables with ndim > 1 (not biases, norm scales, scalars),
            among those the host decays. `"host"`: every variable the host
            decays (its `exclude_from_weight_decay` rules). Defaults to
            `"paper"`.
        name: the optimizer's name. Defaults to `None`: Keras's numbering,
            `"sing"`, `"sing_1"`, ...

    Attributes:
        inner_optimizer: the host optimizer (read-only: a new host needs a
            new SING).
        learning_rate: the host's learning rate (a variable, or its
            schedule); settable.
        iterations: the host's step counter (its count of `apply` calls,
            skipped steps excluded).
        weight_decay: the host's, read and set through SING; so are
            `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`,
            `ema_momentum`, `ema_overwrite_frequency`, `loss_scale_factor`
            and `gradient_accumulation_steps`.
        skipped_steps: steps skipped for non-finite gradients.

    Raises:
        ValueError: an argument is out of range (`epsilon <= 0`,
            `lookahead_steps < 1`, `lookahead_alpha` outside (0, 1], an
            unknown `on_nonfinite` or `weight_decay_mode`), `softplus=True`
            with a host that is not `Adam`/`AdamW`, a host argument
            (`learning_rate=`, `clipnorm=`, ...) given to SING instead of
            the host, a host that is a `SING` or a `LossScaleOptimizer`, an
            unknown optimizer identifier, or a host that already belongs to
            another SING.
        TypeError: an unknown keyword argument, a host that is not a
            `keras.optimizers.Optimizer`, or a `centralize_axes`/`exclude`
            of the wrong type.

    Examples:
        The one-liner: wrap the host and train as usual.

        >>> import numpy as np
        >>> import keras
        >>> import keras_sing
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile(
        ...     optimizer=keras_sing.SING(keras.optimizers.AdamW(1e-2)),
        ...     loss="mse",
        ... )
        >>> history = model.fit(np.ones((8, 4)), np.zeros((8, 2)), verbose=0)
        >>> int(model.optimizer.iterations), int(model.optimizer.skipped_steps)
        (1, 0)

        Options go to SING, hyper-parameters to the host:

        >>> opt = keras_sing.SING(
        ...     keras.optimizers.AdamW(1e-2, weight_decay=1e-4),
        ...     exclude=r"layer_norm",
        ...     lookahead_steps=6,
        ... )
        >>> float(opt.weight_decay), opt.lookahead_steps
        (0.0001, 6)

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
        weight_decay_mode="paper",
        name=None,
        **kwargs,
    ):
        _reject_host_arguments(kwargs)
        host = _resolve_host(optimizer)
        epsilon = _positive_float("epsilon", epsilon)
        softplus_beta = _positive_float("softplus_beta", softplus_beta)
        _check_lookahead(lookahead_steps, lookahead_alpha)
        if isinstance(softplus, np.bool_):  # as the other flags
            softplus = bool(softplus)
        _check_choice("softplus", softplus, (None, True, False))
        if softplus and not _takes_adam_step(host):
            raise ValueError(
                "Argument `softplus=True` needs a host with Adam's "
                "second-moment denominator: keras.optimizers.Adam or "
                f"keras.optimizers.AdamW. Received a {type(host).__name__} "
                "host (a subclass that overrides `update_step` keeps its "
                "own step); use softplus=None or False with it."
            )
        _check_choice("on_nonfinite", on_nonfinite, _NONFINITE_MODES)
        _check_choice(
            "weight_decay_mode", weight_decay_mode, _WEIGHT_DECAY_MODES
        )
        _check_rule("centralize_axes", centralize_axes, dict)
        _check_rule("exclude", exclude, (str, list, tuple))
        centralize = _flag("centralize", centralize)
        normalize = _flag("normalize", normalize)
        lookahead = _flag("lookahead", lookahead)

        super().__init__(learning_rate=0.0, name=name)
        self._inner_optimizer = host
        self.centralize = centralize
        self.normalize = normalize
        self.epsilon = epsilon
        self.softplus = softplus
        self.softplus_beta = softplus_beta
        self.lookahead = lookahead
        self.lookahead_steps = int(lookahead_steps)
        self.lookahead_alpha = float(lookahead_alpha)
        self.centralize_axes = centralize_axes
        self.exclude = exclude
        self.on_nonfinite = on_nonfinite
        self.weight_decay_mode = weight_decay_mode
        # Adam-family hosts get the published Adam step (4); others their own.
        self._published_adam = _takes_adam_step(host)
        self._softplus = self._published_adam if softplus is None else softplus
        # set by `build`: whether the first step reads the layers again
        self._layers_pending = False
        _host.take_over(self, host)

    # ------------------------------------------------------------------ #
    # Build: what to do with each variable, and SING's own slots.
    # ------------------------------------------------------------------ #

    def build(self, var_list):
        """Creates SING's state for `var_list` and builds the host.

        Decides, per variable, whether (1)-(2) apply and over which axes:
        `exclude`, then `centralize_axes`, then the variable's layer in the
        model that calls `build` (`fit`, `train_on_batch`, `load_model`),
        then a guess from rank and name (warning once for uncertain
        guesses, and once for fan-ins of size 1). Then creates LookAhead's
        slow copies, one gradient-norm scalar per variable and
        `skipped_steps`, and builds the host if it is not built. Keras calls
        it; call it yourself only in a custom loop.

        Args:
            var_list: the trainable variables SING will update.

        Examples:
            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> opt = keras_sing.SING()
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt.build([kernel])
            >>> opt.built, len(opt.variables)
            (True, 7)
        """
        if self.built:
            return  # as Keras's own optimizers: built once, for one list
        var_list = list(var_list)
        # created outside a tf.function being traced, so that it is traced
        # once (see backend.state_creation_scope)
        with backend_lib.state_creation_scope():
            self._build(var_list)

    def _build(self, var_list):
        if _host.built_for_other_variables(self.inner_optimizer, var_list):
            raise ValueError(
                "The host optimizer was already built for other variables "
                "(or the same ones in another order) than SING is built "
                "with. Wrap a host that is not built yet, e.g. "
                "SING(keras.optimizers.AdamW(...)), or build SING with the "
                "host's variables, in the host's order."
            )
        layer_rules = _host.layer_rules_for(var_list)
        guessed, degenerate = [], []
        self._plans = tuple(
            self._plan(v, layer_rules, guessed, degenerate) for v in var_list
        )
        _warn_about(guessed, degenerate, found_model=bool(layer_rules))
        # built by no model (`optimizer.build(...)` by hand, as Keras asks
        # before `load_weights` restores a checkpoint's optimizer state):
        # the layers are read again at the first step, if a model takes it
        self._layers_pending = not layer_rules and self.centralize
        self._variable_paths = tuple(_host.path_of(v) for v in var_list)
        _warn_about_unmatched(
            self.exclude, self.centralize_axes, self._variable_paths
        )
        if self.lookahead:
            self._slow_weights = tuple(
                None
                if getattr(v, "overwrite_with_gradient", False)
                or _host.host_steps_alone(v)
                else self.add_variable_from_reference(
                    v, name="lookahead_slow", initializer=_copy_of(v)
                )
                for v in var_list
            )
        # ||g|| of each variable's last real update, which SING computes
        # anyway (read by keras_sing.callbacks.GradientNormMonitor).
        self._gradient_norms = tuple(
            self.add_variable(
                (),
                dtype="float32",
                # named after its variable, as the slots are
                name=f"{path.replace('/', '_')}_gradient_norm",
            )
            for path in self._variable_paths
        )
        self._skipped_steps = self.add_variable(
            (), dtype="int32", name="skipped_steps"
        )
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        # Not super().build(): its EMA copies and gradient accumulators are
        # the host's.
        _host.mark_built(self, var_list)

    def _read_layers_at_the_first_step(self):
        """Plans from the layers of the model taking the first step
        (`fit`, `train_on_batch`), where no model built SING; once."""
        if not self._layers_pending:
            return
        self._layers_pending = False
        layer_rules = _host.layer_rules_for(self._trainable_variables)
        if layer_rules:
            self._plans = tuple(
                self._plan(v, layer_rules, [], [])
                for v in self._trainable_variables
            )

    def _plan(self, variable, layer_rules, guessed, degenerate):
        """`(standardize, axes)` for `variable`: whether (1)-(2) apply, and
        (1)'s axes (`None` for none)."""
        if (
            _matches(self.exclude, variable)
            or not (self.centralize or self.normalize)
            or _host.host_steps_alone(variable)
        ):
            return False, None
        if not self.centralize:
            return True, None
        path = _host.path_of(variable)
        ndim = len(variable.shape)
        rule = self.centralize_axes
        axes = axes_lib.UNKNOWN
        if callable(rule):
            axes = rule(variable)
        elif isinstance(rule, dict):
            axes = next(
                (a for p, a in rule.items() if re.search(p, path)),
                axes_lib.UNKNOWN,
            )
        if axes_lib.is_unknown(axes):
            axes = layer_rules.get(id(variable), axes_lib.UNKNOWN)
        if axes_lib.is_unknown(axes):
            axes = axes_lib.guess_centralize_axes(variable)
            if not axes_lib.is_guess_certain(variable):
                guessed.append(path)
        axes = axes_lib.normalize_axes(axes, ndim, path)
        if axes and axes_lib.fan_in_size(variable.shape, axes) == 1:
            degenerate.append(path)
            axes = None
        return True, axes

    @property
    def variables(self):
        """The optimizer's state: the host's variables, then SING's own.

        The host's come first (its iteration counter, learning rate, slots
        such as Adam's `momentum` and `velocity`, EMA copies and gradient
        accumulators), then LookAhead's slow copies, one gradient-norm
        scalar per variable and `skipped_steps`. SING's unused base-class
        `iteration` and `learning_rate` are not included. This is the list
        that `stateless_apply`, `set_weights` and checkpoints use.

        Returns:
            A list of `keras.Variable`.

        Examples:
            With an AdamW host, one variable gives 2 host counters, 2 Adam
            slots, 1 slow copy, 1 norm and `skipped_steps`:

            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> opt = keras_sing.SING(keras.optimizers.AdamW())
            >>> opt.build([keras.Variable(np.ones((3, 2)), name="kernel")])
            >>> names = [v.name for v in opt.variables]
            >>> names  # doctest: +NORMALIZE_WHITESPACE
            ['iteration', 'learning_rate', 'kernel_momentum', 'kernel_velocity',
             'kernel_lookahead_slow', 'kernel_gradient_norm', 'skipped_steps']
        """
        return self.inner_optimizer.variables + _host.own_variables(self)

    def set_weights(self, weights):
        """Sets every variable of `variables`, the host's included.

        Args:
            weights: one array per variable of `variables`, in that order
                (what `[v.numpy() for v in opt.variables]` gives).

        Raises:
            ValueError: the optimizer is not built, `weights` has the wrong
                length, or a weight has the wrong shape.

        Examples:
            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt, copy = keras_sing.SING(), keras_sing.SING()
            >>> step = opt.apply_gradients([(np.ones((3, 2)), kernel)])
            >>> copy.build([kernel])
            >>> weights = [keras.ops.convert_to_numpy(v) for v in opt.variables]
            >>> copy.set_weights(weights)
            >>> int(copy.iterations)
            1
        """
        if not self.built:
            raise ValueError(
                "You are calling `set_weights()` on an optimizer that has not "
                "yet been built. Call `optimizer.build(trainable_variables)` "
                "first."
            )
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"SING has {len(variables)} variables (the host's and its "
                f"own), received {len(weights)} weights."
            )
        for variable, weight in zip(variables, weights, strict=True):
            if tuple(variable.shape) != tuple(weight.shape):
                raise ValueError(
                    f"Optimizer variable {variable.path} has shape "
                    f"{variable.shape}, not compatible with the weight's "
                    f"shape {weight.shape}."
                )
            variable.assign(weight)

    # ------------------------------------------------------------------ #
    # Apply: the host's step, kept or skipped whole.
    # ------------------------------------------------------------------ #

    def apply_gradients(self, grads_and_vars):
        """One optimizer step from `(gradient, variable)` pairs.

        As `keras.optimizers.Optimizer.apply_gradients`: builds the
        optimizer at the first call, then runs `apply`.

        Args:
            grads_and_vars: a list of `(gradient, variable)` pairs.

        Returns:
            The host's iteration counter (a variable), as the host's own
            `apply_gradients` returns.

        Examples:
            One step of the paper's recipe on a `(3, 2)` kernel: the
            gradient is centralized over axis 0 (`[[-2, -2], [0, 0], [2,
            2]]`), divided by its norm 4, and Adam's first step with the
            softplus denominator moves each weight by about `lr = 5e-3`
            against the sign of the standardized gradient (zero where it
            is zero):

            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt = keras_sing.SING()  # AdamW(5e-3), the paper's host
            >>> grad = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
            >>> step = opt.apply_gradients([(grad, kernel)])
            >>> print(np.round(keras.ops.convert_to_numpy(kernel), 4))
            [[1.005 1.005]
             [1.    1.   ]
             [0.995 0.995]]
        """
        grads, trainable_variables = zip(*grads_and_vars, strict=True)
        self.apply(grads, trainable_variables)
        # what the host's own apply_gradients returns
        return _host.micro_step_counter(self.inner_optimizer)

    def apply(self, grads, trainable_variables=None):
        """One optimizer step: the host's `apply`, with SING inside it.

        Runs the host's `apply` (loss-scale unscaling, gradient
        accumulation, clipping, then SING's per-variable step in place of
        the host's `update_step`, then EMA), unless a gradient holds a NaN
        or an infinity: then, with `on_nonfinite="skip"` or `"raise"`,
        nothing of the step runs, `skipped_steps` grows by one and, with
        `"raise"`, the step raises.

        Args:
            grads: one gradient per variable.
            trainable_variables: the variables; needed at the first call
                if the optimizer is not built. Defaults to `None`.

        Raises:
            ValueError: the optimizer is not built and
                `trainable_variables` is `None`, or `grads` does not hold
                one gradient per variable.
            FloatingPointError: with `on_nonfinite="raise"`, eagerly and on
                torch, after skipping a non-finite step (a TF graph raises
                `tf.errors.InvalidArgumentError`, `jax.jit` a
                `JaxRuntimeError`).

        Examples:
            A gradient holding a NaN is skipped whole:

            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt = keras_sing.SING()
            >>> opt.apply([np.full((3, 2), np.nan)], [kernel])
            >>> int(opt.skipped_steps), int(opt.iterations)
            (1, 0)
            >>> print(keras.ops.convert_to_numpy(kernel))
            [[1. 1.]
             [1. 1.]
             [1. 1.]]
        """
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "SING must be built before `apply` is called without "
                    "variables: call `optimizer.build(trainable_variables)`."
                )
            # no name scope of SING's here: the host's slots get the paths
            # they get from `build` called directly
            self.build(trainable_variables)
        self._read_layers_at_the_first_step()
        grads = _checked_gradients(
            grads, trainable_variables or self._trainable_variables
        )
        host = self.inner_optimizer
        if _host.in_jax_stateless_scope():
            self._apply_through_stateless_apply(grads, trainable_variables)
        elif self.on_nonfinite == "ignore":
            _host.apply_host(host, grads, trainable_variables)
        elif _host.in_tf_replica_context():
            _host.apply_per_replica_if_finite(self, grads, trainable_variables)
        else:
            finite, settings = _host.finiteness_check(
                self, grads, trainable_variables or self._trainable_variables,
                stateful=True,
            )
            with _host.step_settings(**settings):
                self._apply_if_finite(finite, grads, trainable_variables)
            # read after the skip: a skipped step left the counter as it was
            self._raise_if_requested(
                finite, lambda: ops.add(_host.read(self.iterations), 1)
            )

    def _apply_through_stateless_apply(self, grads, trainable_variables):
        """`apply` as `stateless_apply` on the variables' current values,
        written back: what a JAX `StatelessScope` records (see
        `_host.in_jax_stateless_scope`)."""
        variables = list(trainable_variables or self._trainable_variables)
        new_trainable, new_optimizer = self.stateless_apply(
            [_host.read(v) for v in self.variables],
            grads,
            [_host.read(v) for v in variables],
        )
        for variable, value in zip(
            variables + self.variables, new_trainable + new_optimizer,
            strict=True,
        ):
            variable.assign(value)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """The step as a pure function (what JAX's `fit` uses).

        The host's whole step (with SING and LookAhead's sync inside it)
        is one branch of a single `cond` on the gradients' finiteness; the
        other branch returns the values given. LookAhead's seed (the slow
        copy taken at the first update) is taken just before, under the
        same flag. So a non-finite step returns every value unchanged,
        whatever the step would have written (weights, slots, EMA, slow
        weights), and `skipped_steps` counts it. No variable is changed.

        Args:
            optimizer_variables: the current values of `variables`, in
                order.
            grads: one gradient per trainable variable.
            trainable_variables: the current values of the variables SING
                was built with, in order.

        Returns:
            `(new_trainable_values, new_optimizer_values)`, two lists in
            the order of the arguments.

        Raises:
            ValueError: `optimizer_variables` does not match `variables`
                1:1, the trainable variables are not the ones SING was
                built with, or `grads` does not hold one gradient per
                trainable variable.

        Examples:
            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt = keras_sing.SING()
            >>> opt.build([kernel])
            >>> grad = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
            >>> new_kernel, new_state = opt.stateless_apply(
            ...     [v.value for v in opt.variables], [grad], [kernel.value]
            ... )
            >>> print(np.round(keras.ops.convert_to_numpy(new_kernel[0]), 4))
            [[1.005 1.005]
             [1.    1.   ]
             [0.995 0.995]]
            >>> float(keras.ops.sum(kernel))  # the variable is unchanged
            6.0
        """
        self._check_same_variables(trainable_variables)
        self._read_layers_at_the_first_step()
        grads = _checked_gradients(grads, trainable_variables)
        optimizer_values = [_host.read(v) for v in optimizer_variables]
        trainable_values = [_host.read(v) for v in trainable_variables]
        if len(optimizer_values) != len(self.variables):
            raise ValueError(
                "Argument `optimizer_variables` must match "
                f"`SING.variables` 1:1: expected {len(self.variables)}, "
                f"received {len(optimizer_values)}."
            )

        def step(optimizer_values):
            return _host.stateless_apply_unchecked(
                self, optimizer_values, grads, trainable_values
            )

        if self.on_nonfinite == "ignore":
            optimizer_values, seeded = _host.seed_lookahead_ahead(
                self, optimizer_values, trainable_values, None
            )
            with _host.step_settings(**seeded):
                return step(optimizer_values)
        finite, settings = _host.finiteness_check(
            self, grads, self._trainable_variables,
            value_of=lambda v: optimizer_values[
                _host.position(self.variables, v)
            ],
        )
        # LookAhead's seed, ahead of the step (the same values, and no copy
        # of every weight on every step); a skipped step seeds nothing
        optimizer_values, seeded = _host.seed_lookahead_ahead(
            self, optimizer_values, trainable_values, finite
        )
        # one decision for everything the step writes: all new values, or
        # all old ones
        with _host.step_settings(**settings, **seeded):
            new_trainable, new_optimizer = backend_lib.cond(
                finite,
                lambda: step(optimizer_values),
                lambda: (trainable_values, optimizer_values),
            )
        new_optimizer = list(new_optimizer)
        skipped = _host.position(self.variables, self._skipped_steps)
        new_optimizer[skipped] = ops.add(
            new_optimizer[skipped],
            ops.cast(ops.logical_not(finite), new_optimizer[skipped].dtype),
        )
        iterations = _host.position(
            self.variables, _host.micro_step_counter(self.inner_optimizer)
        )
        self._raise_if_requested(
            finite, lambda: ops.add(optimizer_values[iterations], 1)
        )
        return list(new_trainable), new_optimizer

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

    def _apply_if_finite(self, finite, grads, trainable_variables):
        """The host's `apply` if `finite`, else `skipped_steps += 1`.

        Compiled, the count is added after the step's `cond`, whose skipped
        branch then writes nothing: XLA keeps a `cond` with an empty branch,
        where one whose branches are all elementwise (SING's step with its
        statistics computed ahead, and no LookAhead) becomes a `select` on
        every output, with the finite flag's chain of per-variable checks
        fused into each (TensorFlow's optimized program grew 5x, and its
        compile 2x: `tests/test_compile_cost.py`)."""

        def step():
            _host.apply_host(self.inner_optimizer, grads, trainable_variables)

        if not backend_lib.is_traced(finite):
            return step() if bool(finite) else self._count_skipped_step()
        backend_lib.cond(finite, step, lambda: None)
        self._skipped_steps.assign_add(
            ops.cast(ops.logical_not(finite), self._skipped_steps.dtype)
        )

    def _count_skipped_step(self):
        self._skipped_steps.assign_add(1)

    @property
    def skipped_steps(self):
        """How many steps were skipped for non-finite gradients.

        Returns:
            An int32 scalar variable (saved with the optimizer), or `0`
            before the optimizer is built.

        Examples:
            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt = keras_sing.SING()
            >>> opt.skipped_steps
            0
            >>> opt.apply([np.full((3, 2), np.inf)], [kernel])
            >>> int(opt.skipped_steps)
            1
        """
        return self._skipped_steps if self.built else 0

    def _check_same_variables(self, trainable_variables):
        built_with = len(self._trainable_variables) if self.built else None
        if built_with is not None and len(trainable_variables) != built_with:
            raise ValueError(
                f"SING was built for {built_with} trainable variables and "
                f"received {len(trainable_variables)}: the model's trainable "
                "variables changed after the optimizer was built (a layer "
                "was frozen or unfrozen). Like Keras's own optimizers, SING "
                "serves the variables it was built with: compile again with "
                "a new optimizer, e.g. model.compile(optimizer=keras_sing."
                "SING(keras.optimizers.AdamW(...)), ...)."
            )
        # on JAX, values stand for the variables: their shapes are what
        # tells another model's apart (TF and torch raise Keras's "Unknown
        # variable")
        others = [
            (v.path, tuple(v.shape), tuple(x.shape))
            for v, x in zip(
                self._trainable_variables, trainable_variables, strict=True
            )
            if tuple(v.shape) != tuple(x.shape)
        ] if self.built else []
        if others:
            raise ValueError(
                "SING was built for other variables than it received "
                f"(path, built shape, received shape): {others[:3]}. Like "
                "Keras's own optimizers, SING serves the variables it was "
                "built with (a second model needs its own): compile it with "
                "a new optimizer, e.g. model.compile(optimizer=keras_sing."
                "SING(keras.optimizers.AdamW(...)), ...)."
            )

    # ------------------------------------------------------------------ #
    # Insight: the gradient norms SING computes anyway.
    # ------------------------------------------------------------------ #

    @property
    def gradient_norm_variables(self):
        """The gradient norms SING records, as variables.

        Each norm variable holds `||g||_2` of its variable's gradient at the
        last real update: after centralization, before normalization (the
        raw gradient's norm for `exclude`d variables; 0 for a variable of
        a non-float dtype or with no elements, which the host steps on its
        own). Reading them costs
        nothing during the step: SING computes these norms anyway.
        `keras_sing.callbacks.GradientNormMonitor` reads them.

        Returns:
            `[(variable.path, norm_variable), ...]` in the order of the
            trainable variables; `[]` before the optimizer is built.

        Examples:
            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt = keras_sing.SING()
            >>> opt.gradient_norm_variables
            []
            >>> opt.build([kernel])
            >>> [path for path, _ in opt.gradient_norm_variables]
            ['kernel']
        """
        if not self.built:
            return []
        return list(
            zip(self._variable_paths, self._gradient_norms, strict=True)
        )

    def gradient_norms(self):
        """The values of `gradient_norm_variables`, read to the host.

        Returns:
            `{variable.path: float}`.

        Examples:
            The norm of the centralized gradient `[[-2, -2], [0, 0], [2,
            2]]` is 4:

            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt = keras_sing.SING()
            >>> grad = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
            >>> step = opt.apply_gradients([(grad, kernel)])
            >>> opt.gradient_norms()
            {'kernel': 4.0}
        """
        return {
            path: float(ops.convert_to_numpy(v))
            for path, v in self.gradient_norm_variables
        }

    # ------------------------------------------------------------------ #
    # The host's state and settings, seen through SING.
    # ------------------------------------------------------------------ #

    @property
    def inner_optimizer(self):
        """The host optimizer, whose update SING took over when created.

        Read-only: a host set afterwards would step without SING, so a new
        host needs a new SING.

        Returns:
            The host, a `keras.optimizers.Optimizer`.

        Raises:
            AttributeError: when set.

        Examples:
            >>> import keras
            >>> import keras_sing
            >>> host = keras.optimizers.AdamW(1e-3)
            >>> keras_sing.SING(host).inner_optimizer is host
            True
        """
        return self._inner_optimizer

    @inner_optimizer.setter
    def inner_optimizer(self, value):
        raise AttributeError(
            "SING's host cannot be replaced: SING took over its update when "
            "it was created, and a host set afterwards would step without "
            "SING. Create a new SING instead: SING(new_host, ...)."
        )

    @property
    def learning_rate(self):
        """The host's learning rate; setting it sets the host's.

        `LearningRateScheduler`, `ReduceLROnPlateau` and schedules act on
        the host through it.

        Returns:
            The host's learning-rate variable (its current value under a
            schedule).

        Examples:
            >>> import keras
            >>> import keras_sing
            >>> opt = keras_sing.SING(keras.optimizers.AdamW(1e-2))
            >>> opt.learning_rate = 5e-2
            >>> round(float(opt.inner_optimizer.learning_rate), 6)
            0.05
        """
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        """The host's step counter.

        It counts real updates: with `gradient_accumulation_steps=n`,
        Keras's public counter is its micro-step counter divided by `n`. A
        skipped step does not count.

        Returns:
            The host's integer iteration variable.

        Examples:
            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt = keras_sing.SING()
            >>> step = opt.apply_gradients([(np.ones((3, 2)), kernel)])
            >>> int(opt.iterations)
            1
        """
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        """The host's `scale_loss`: `loss * loss_scale_factor` if the host
        has one, else `loss`.

        SING's step does not depend on the scale of the gradient (up to
        `epsilon`), so a loss-scale factor changes nothing but the
        precision of the backward pass.

        Args:
            loss: the loss value.

        Returns:
            The scaled loss.

        Examples:
            >>> import keras
            >>> import keras_sing
            >>> host = keras.optimizers.AdamW(loss_scale_factor=128.0)
            >>> opt = keras_sing.SING(host)
            >>> float(opt.scale_loss(2.0))
            256.0
        """
        return self.inner_optimizer.scale_loss(loss)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Excludes variables from the host's weight decay (call before
        `build`).

        Sets the host's rule; SING applies the decay, per variable, to the
        variables the host would decay (and, with
        `weight_decay_mode="paper"`, only to those with ndim > 1).

        Args:
            var_list: variables to exclude. Defaults to `None`.
            var_names: regexes searched in variable names. Defaults to
                `None`.

        Examples:
            With zero gradients and no standardization, only the decay
            moves the weights: `1 - lr * weight_decay = 0.95`.

            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((2, 2)), name="kernel")
            >>> bias = keras.Variable(np.ones((2, 2)), name="bias")
            >>> opt = keras_sing.SING(
            ...     keras.optimizers.SGD(0.1, weight_decay=0.5),
            ...     centralize=False, normalize=False, lookahead=False,
            ... )
            >>> opt.exclude_from_weight_decay(var_names=["bias"])
            >>> step = opt.apply_gradients(
            ...     [(np.zeros((2, 2)), kernel), (np.zeros((2, 2)), bias)]
            ... )
            >>> float(kernel[0, 0]), float(bias[0, 0])
            (0.95, 1.0)
        """
        self.inner_optimizer.exclude_from_weight_decay(
            var_list=var_list, var_names=var_names
        )

    def finalize_variable_values(self, var_list):
        """The host's `finalize_variable_values`: with `use_ema=True`,
        writes the EMA of each variable into it (Keras calls this at the
        end of `fit`); otherwise does nothing.

        Args:
            var_list: the trainable variables.

        Examples:
            >>> import numpy as np
            >>> import keras
            >>> import keras_sing
            >>> kernel = keras.Variable(np.ones((3, 2)), name="kernel")
            >>> opt = keras_sing.SING()  # no EMA: nothing changes
            >>> opt.build([kernel])
            >>> opt.finalize_variable_values([kernel])
            >>> float(keras.ops.sum(kernel))
            6.0
        """
        self.inner_optimizer.finalize_variable_values(var_list)

    @property
    def _model_variables_moving_average(self):
        # The host's EMA copies, where Keras looks for them:
        # `keras.callbacks.SwapEMAWeights` takes a wrapper's
        # `inner_optimizer`, which is SING itself inside a
        # LossScaleOptimizer (what `mixed_float16` compiles to).
        return _host.moving_averages(self.inner_optimizer)

    def get_config(self):
        """SING's configuration, the host's included (serialized).

        `centralize_axes` and `exclude` callables are serialized as Keras
        objects: register them with
        `keras.saving.register_keras_serializable` to load them back.

        Returns:
            A JSON-serializable dict; `SING.from_config` takes it back.

        Examples:
            >>> import keras
            >>> import keras_sing
            >>> config = keras_sing.SING(lookahead_steps=6).get_config()
            >>> config["lookahead_steps"], config["optimizer"]["class_name"]
            (6, 'AdamW')
        """
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
            "weight_decay_mode": self.weight_decay_mode,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A new SING (and a new host) from `get_config`'s dict.

        Configurations saved by keras_sing 0.1.0 with `skip_nonfinite` load
        as the matching `on_nonfinite`.

        Args:
            config: the dict `get_config` returned.
            custom_objects: custom classes and functions for the host and
                the `centralize_axes`/`exclude` rules. Defaults to `None`.

        Returns:
            A `SING` instance (not built: its state is the checkpoint's).

        Examples:
            >>> import keras
            >>> import keras_sing
            >>> host = keras.optimizers.SGD(0.1)
            >>> opt = keras_sing.SING(host, lookahead=False)
            >>> again = keras_sing.SING.from_config(opt.get_config())
            >>> type(again.inner_optimizer).__name__, again.lookahead
            ('SGD', False)
        """
        config = copy.deepcopy(config)  # deserialize() edits nested dicts
        host = config.pop("optimizer", None)  # absent: the default host
        if isinstance(host, dict):
            # every optimizer of `keras.optimizers` by its class name:
            # `keras.optimizers.deserialize`'s table misses some (Lamb); a
            # string is an identifier for SING to resolve
            host = keras.saving.deserialize_keras_object(
                host,
                module_objects=_keras_optimizer_classes(),
                custom_objects=custom_objects,
            )
        if "skip_nonfinite" in config:  # keras_sing 0.1.0's name for it
            skip = config.pop("skip_nonfinite")
            config.setdefault("on_nonfinite", "skip" if skip else "ignore")
        for key in ("centralize_axes", "exclude"):
            config[key] = _deserialize_rule(config.get(key), custom_objects)
        return cls(host, **config)


def _keras_optimizer_classes():
    """`{class name: class}` of every optimizer `keras.optimizers` exports."""
    return {
        name: value
        for name, value in vars(keras.optimizers).items()
        if isinstance(value, type)
        and issubclass(value, keras.optimizers.Optimizer)
    }


def _host_setting(name):
    """A property that reads and sets the host's `name`. Set before the
    host exists (by the base class's __init__, with its defaults), it is
    dropped: those settings are the host's."""

    def get(self):
        return getattr(self.inner_optimizer, name)

    def set_(self, value):
        host = self.__dict__.get("_inner_optimizer")
        if host is not None:
            setattr(host, name, value)

    get.__doc__ = _HOST_SETTING_DOC.format(name=name)
    return property(get, set_, doc=get.__doc__)


_HOST_SETTING_DOC = """The host's `{name}`, read and set through SING.

    SING has no `{name}` of its own: reading it gives the host's value and
    setting it sets the host's (Keras's trainer, callbacks and users read
    such settings on the optimizer they hold).

    Returns:
        `inner_optimizer.{name}`.

    Examples:
        >>> import keras
        >>> import keras_sing
        >>> opt = keras_sing.SING(keras.optimizers.AdamW(1e-3))
        >>> opt.{name} == opt.inner_optimizer.{name}
        True
    """


for _name in _HOST_ARGUMENTS:
    if _name != "learning_rate":
        setattr(SING, _name, _host_setting(_name))


# ---------------------------------------------------------------------- #
# Argument checks and rules.
# ---------------------------------------------------------------------- #


def _warn_about(guessed, degenerate, found_model):
    if guessed and not found_model:
        warnings.warn(
            "SING could not find the layer of these variables (no model "
            "built the optimizer: a custom loop?) and guessed their "
            "centralization axes from their rank and name (all axes but "
            f"the last): {guessed}. The guess is wrong for depthwise and "
            "attention (EinsumDense) kernels. If a model's `fit` or "
            "`train_on_batch` takes the first step, SING reads its layers "
            "then; in a custom loop, pass "
            "`centralize_axes=keras_sing.fan_in_axes(model)` to SING to use "
            "each layer's exact fan-in, or your own axes.",
            stacklevel=3,
        )
    elif guessed:
        warnings.warn(
            "SING has no fan-in rule for the layers of these variables "
            "(custom layers?) and guessed their centralization axes from "
            f"their rank and name (all axes but the last): {guessed}. Pass "
            "`centralize_axes={path regex: axes}` to SING with each "
            "kernel's input axes (those a PyTorch twin would average over), "
            "or `exclude` them.",
            stacklevel=3,
        )
    if degenerate:
        warnings.warn(
            "These variables have a fan-in of size 1, so centralization "
            f"would set their gradient to zero: {degenerate}. SING does not "
            "centralize them (it only normalizes), where the published code "
            "would never train them. Pass `centralize_axes` to choose "
            "otherwise.",
            stacklevel=3,
        )


def _is_real(value):
    """A finite real number (NumPy's included), not a bool."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _flag(name, value):
    """`value` as a bool, if it is one (NumPy's included)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(
        f"Argument `{name}` must be True or False. Received: {name}={value!r}"
    )


_MAX_LOOKAHEAD_STEPS = 2**31 - 1


def _check_lookahead(lookahead_steps, lookahead_alpha):
    if isinstance(lookahead_steps, bool) or not isinstance(
        lookahead_steps, numbers.Integral
    ) or not 1 <= lookahead_steps <= _MAX_LOOKAHEAD_STEPS:
        raise ValueError(
            "Argument `lookahead_steps` must be an int in [1, 2**31 - 1] (1 "
            "syncs every step; it is compared with the int32 step counter). "
            f"Received: lookahead_steps={lookahead_steps!r}"
        )
    if not _is_real(lookahead_alpha) or not 0.0 < lookahead_alpha <= 1.0:
        raise ValueError(
            "Argument `lookahead_alpha` must be a float in (0, 1] (1 keeps "
            "the fast weights; use `lookahead=False` to turn LookAhead "
            f"off). Received: lookahead_alpha={lookahead_alpha!r}"
        )


def _check_choice(name, value, choices):
    if not any(
        value is c or (isinstance(c, str) and value == c) for c in choices
    ):
        raise ValueError(
            f"Argument `{name}` must be one of "
            f"{', '.join(repr(c) for c in choices)}. "
            f"Received: {name}={value!r}"
        )


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
            "Argument `optimizer` cannot be a SING optimizer: SING "
            "standardizes gradients once. Pass its host instead, e.g. "
            "SING(AdamW(...))."
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "Argument `optimizer` cannot be a LossScaleOptimizer. Wrap the "
            "other way round, LossScaleOptimizer(SING(AdamW(...))), or set "
            "the `mixed_float16` policy and let `compile` do it."
        )
    if type(optimizer).__name__ == "MultiOptimizer":
        raise ValueError(
            "Argument `optimizer` cannot be a MultiOptimizer: it applies its "
            "optimizers' own steps, so SING around it would change nothing. "
            "Wrap the other way round: MultiOptimizer(OptimizerMap("
            "SING(AdamW(...)), {path regex: other optimizer}))."
        )
    if isinstance(optimizer, (str, dict)):
        try:
            optimizer = keras.optimizers.get(optimizer)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                "Argument `optimizer` could not be interpreted: "
                f"{optimizer!r} ({type(error).__name__}: {error}). "
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
    if not _is_real(value) or not value > 0:
        raise ValueError(
            f"Argument `{name}` must be a finite float > 0. Received: "
            f"{name}={value!r}"
        )
    return float(value)


def _checked_gradients(grads, variables):
    """`grads` as a list, one per variable: nested lists and Python
    numbers as tensors of the variable's dtype; a gradient of another rank
    than its variable's is an error (a scalar is not broadcast)."""
    grads = list(grads)
    if len(grads) != len(variables):
        raise ValueError(
            f"SING received {len(grads)} gradients for {len(variables)} "
            "variables. Pass one gradient (or None) per variable, in the "
            "order of the variables."
        )
    checked = []
    for grad, variable in zip(grads, variables, strict=True):
        if isinstance(grad, (list, tuple, numbers.Number)) and not hasattr(
            grad, "shape"
        ):
            grad = ops.convert_to_tensor(grad, dtype=variable.dtype)
        rank = None if grad is None else _static_rank(grad)
        if rank is not None and rank != len(variable.shape):
            raise ValueError(
                f"SING received a gradient of shape {tuple(grad.shape)} for "
                f"variable '{getattr(variable, 'path', None) or '?'}' of shape "
                f"{tuple(variable.shape)}. Pass one gradient of each "
                "variable's shape, in the order of the variables."
            )
        checked.append(grad)
    return checked


def _static_rank(tensor):
    """The rank of a (possibly symbolic or sparse) tensor's static shape,
    or `None` where unknown (TF's unknown rank; an `IndexedSlices` whose
    dense shape is not a tensor has no `shape`)."""
    try:
        return len(tensor.shape)
    except (AttributeError, TypeError, ValueError):
        return None


def _copy_of(variable):
    """An initializer that copies `variable`'s value when SING is built.

    LookAhead's slow copy `S` is taken again at the host's first update
    (0), so that weights loaded after `compile` are the ones it starts
    from. Starting it at the weights as well (as the published LookAhead
    does, at construction) covers a host that stepped before SING was
    built (`compile(optimizer=SING(model.optimizer))` after a first `fit`),
    whose first update is past: its first sync would otherwise pull the
    weights towards zeros."""

    def initializer(shape, dtype=None):
        return ops.copy(_host.read(variable))

    return initializer


def _patterns(rule):
    """The regexes of an `exclude`/`centralize_axes` rule: a string, a
    list or tuple of them, or a dict's keys."""
    return [rule] if isinstance(rule, str) else list(rule)


def _unmatched(rule, paths):
    """The regexes of a rule that are found in none of `paths`."""
    if rule is None or callable(rule):
        return []
    return [
        p for p in _patterns(rule) if not any(re.search(p, x) for x in paths)
    ]


def _warn_about_unmatched(exclude, centralize_axes, paths):
    """Warns once per build about regexes that select none of the
    variables' `paths`: a typo or another model's layer names would
    otherwise change nothing, silently."""
    if not paths:
        return
    for name, rule, effect in (
        ("exclude", exclude, "exclude nothing"),
        ("centralize_axes", centralize_axes, "set no axes"),
    ):
        unmatched = _unmatched(rule, paths)
        if unmatched:
            warnings.warn(
                f"SING's `{name}` regexes {unmatched} are found in none of "
                f"the paths of the {len(paths)} variables it was built with "
                f"(e.g. {list(paths[:3])}), so they {effect}. The regexes are "
                "searched in `variable.path`; "
                "`keras_sing.callbacks.exclude_regex(layer_path)` gives one "
                "that selects exactly one layer's variables.",
                stacklevel=3,
            )


def _check_rule(name, rule, accepted):
    """`exclude` and `centralize_axes`: `None`, a callable, or `accepted`
    holding regex strings (a dict's keys, mapped to axes)."""
    if rule is None or callable(rule):
        return
    if not isinstance(rule, accepted):
        raise TypeError(
            f"Argument `{name}` must be None, a callable taking a variable, "
            f"or a {' or '.join(t.__name__ for t in _as_tuple(accepted))}. "
            f"Received: {rule!r}"
        )
    patterns = _patterns(rule)
    if isinstance(rule, dict):
        for pattern, axes in rule.items():
            if not isinstance(pattern, str) or not axes_lib.is_axes(axes):
                raise TypeError(
                    f"Argument `{name}` maps regex strings to axes: a tuple "
                    "of ints, an int or None. Received "
                    f"{pattern!r}: {axes!r}. Pass e.g. "
                    "{r\"dense/kernel\": (0,), r\"bias\": None}."
                )
    elif not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            f"Argument `{name}` as a list holds regex strings, searched in "
            "variable paths (saved with the model as such). Received: "
            f"{rule!r}. Pass e.g. [r\"layer_norm\", r\"bias$\"], or a "
            "callable taking a variable."
        )
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"Argument `{name}` holds an invalid regex {pattern!r} "
                f"({error}). Escape it with re.escape(...) to match a "
                "path literally."
            ) from None


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _matches(rule, variable):
    """Whether `variable` is selected by an `exclude` rule."""
    if rule is None:
        return False
    if callable(rule):
        return bool(rule(variable))
    path = _host.path_of(variable)
    return any(re.search(p, path) for p in _patterns(rule))


def _serialize_rule(rule):
    if callable(rule):
        return keras.saving.serialize_keras_object(rule)
    if isinstance(rule, tuple):
        return list(rule)
    if isinstance(rule, dict):  # axes as JSON: NumPy ints as ints
        return {
            k: a if a is None else int(a) if axes_lib.is_axis(a)
            else [int(x) for x in a]
            for k, a in rule.items()
        }
    return rule


def _deserialize_rule(rule, custom_objects):
    if isinstance(rule, dict) and "class_name" in rule and "config" in rule:
        return keras.saving.deserialize_keras_object(
            rule, custom_objects=custom_objects
        )
    if isinstance(rule, dict):
        return {
            k: a if a is None or axes_lib.is_axis(a) else tuple(a)
            for k, a in rule.items()
        }
    return rule
