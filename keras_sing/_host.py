"""Everything of keras_sing that touches Keras internals.

SING must act on the gradient the host applies: after the host's gradient
accumulation and, under `tf.distribute`, after the cross-replica sum, both
of which happen inside the host's `apply`, just before its per-variable
`update_step`. Keras has no hook there, so SING takes over the host
instance's `update_step` (and its weight decay, which SING applies per
variable, as the paper does: Keras's rule, or the host class's own
`_apply_weight_decay`). On torch, Keras swaps stock `Adam`, `AdamW`,
`SGD`, `Lion`, ... for fused subclasses whose `_backend_update_step` never
calls `update_step`; SING replaces that too, with the batched step of
`keras_sing.backend.torch` or the host's non-fused path.

This module reads the host's slots (`_momentums`, `_velocities`, ...), its
micro-step counter and its variable index; it calls the math of
`keras_sing.transforms` and writes the results back. Nothing else in
keras_sing reaches into Keras's private attributes.
"""

import functools
import sys
import threading

import keras
from keras import ops

from keras_sing import axes as axes_lib
from keras_sing import backend as backend_lib
from keras_sing import transforms

# tests turn it off to compare the torch fast path with the generic path
TORCH_FAST_PATH = True

# The per-variable functions, traced once per signature under `jax.jit`
# (the variables of one shape share a trace); on TF and torch, themselves.
_sing_adam_step = backend_lib.traced_once_per_signature(
    transforms.sing_adam_step, ("hyper",)
)
_standardization_statistics = backend_lib.traced_once_per_signature(
    transforms.standardization_statistics, ("axes", "centralize_")
)


def read(variable):
    """The tensor value of a `keras.Variable` (backend values pass)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def path_of(variable):
    """`variable.path`; the name of a plain backend variable (`tf.Variable`
    has no path)."""
    return getattr(variable, "path", None) or variable.name


def find_building_model(variables):
    """The model whose weights hold all of `variables`, found among the
    callers of `optimizer.build` (Keras's trainer calls
    `optimizer.build(self.trainable_variables)` from `fit`,
    `train_on_batch`, `load_model`...), or `None` (a custom loop)."""
    wanted = {id(v) for v in variables}
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, keras.layers.Layer):
            held = {id(v) for v in candidate.weights}
            if wanted <= held:
                return candidate
        frame = frame.f_back
    return None


def layers_of(model):
    """`{id(variable): layer}` for every weight of `model`, each mapped to
    the layer that created it (the one whose own variables hold it, not a
    model or wrapper around it), else to the innermost layer that holds
    it."""
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    owner = {}
    # pre-order: a nested layer comes after its parent and overrides it;
    # but a layer shared by two models is visited once, under the first
    for layer in layers:
        for variable in layer.weights:
            owner[id(variable)] = layer
    for layer in layers:
        for variable in _own_variables(layer):
            owner[id(variable)] = layer
    return owner


def _own_variables(layer):
    """The variables `layer` created itself, not its sublayers'."""
    return list(getattr(layer, "_trainable_variables", ())) + list(
        getattr(layer, "_non_trainable_variables", ())
    )


def layer_rules_for(variables):
    """`{id(variable): axes or axes_lib.UNKNOWN}` from the layers of the
    model that is building the optimizer (empty without one)."""
    model = find_building_model(variables)
    if model is None:
        return {}
    return axes_lib.rules_from_layers(variables, layers_of(model))


def fan_in_axes(model):
    """Per-variable centralization axes read from the layers of `model`.

    The axes of SING's step (1) for each trainable variable, from its
    layer, as the published PyTorch optimizer centralizes the same layer
    (one mean per output unit of `Dense`/convolution kernels, per filter
    of depthwise kernels, per row of embedding tables, over the contracted
    axes of `EinsumDense`/attention kernels, none for biases and 1-D
    normalization scales; the full table is in the algorithm page,
    docs/algorithm.md). `fit` finds these rules by itself; pass them in
    custom loops (`apply_gradients`, `stateless_apply`), where SING sees
    variables but no model. Variables of layers the table does not know
    (a custom layer's own weights) are left out, and SING guesses theirs.

    Update rule:

        g = G - mean(G, axes)        axes = fan_in_axes(model)[path]

    Args:
        model: a built `keras.Model` (or layer).

    Returns:
        A dict `{regex: axes or None}` keyed by each variable's anchored,
        escaped path, ready for `SING(..., centralize_axes=...)` and
        serializable with it.

    Examples:
        >>> import keras
        >>> import keras_sing
        >>> model = keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(3, name="dense")],
        ...     name="model",
        ... )
        >>> axes = keras_sing.fan_in_axes(model)
        >>> axes
        {'^model/dense/kernel$': (0,), '^model/dense/bias$': None}
        >>> opt = keras_sing.SING(centralize_axes=axes)  # for a custom loop

    References:
        - Courtois et al., [SING: A Plug-and-Play DNN Learning Technique](
          https://arxiv.org/abs/2305.15997), 2023.
        - Yong et al., [Gradient Centralization](
          https://arxiv.org/abs/2004.01461), 2020.
    """
    variables = model.trainable_variables
    rules = axes_lib.rules_from_layers(variables, layers_of(model))
    return axes_lib.exact_path_rules(variables, rules)


def own_variables(optimizer):
    """An optimizer's own variables but for the base class's `iteration`
    and `learning_rate`, which a wrapper leaves unused (the host's count)."""
    unused = (optimizer._iterations, optimizer._learning_rate)
    return [v for v in optimizer._variables if not any(v is u for u in unused)]


def built_for_other_variables(host, variables):
    """Whether `host` is built, for other variables than `variables` (in
    that order): SING reads the host's slots by the host's index."""
    if not host.built:
        return False
    keys = [host._var_key(v) for v in host._trainable_variables]
    return keys != [host._var_key(v) for v in variables]


def moving_averages(host):
    """The host's EMA copies of the variables (`use_ema=True`, built);
    an `AttributeError` otherwise, as on the host."""
    return host._model_variables_moving_average


def micro_step_counter(host):
    """The host's counter of `apply` calls (micro-steps with
    accumulation), what its `apply_gradients` returns."""
    return host._iterations


def mark_built(optimizer, variables):
    """What the base class's `build` records, without its EMA copies and
    gradient accumulators (those are the host's): the variables' indices,
    kept untracked (they are the model's, not the optimizer's)."""
    for i, variable in enumerate(variables):
        optimizer._trainable_variables_indices[optimizer._var_key(variable)] = i
    object.__setattr__(optimizer, "_trainable_variables", list(variables))
    optimizer.built = True


# ---------------------------------------------------------------------- #
# Taking over the host's update.
# ---------------------------------------------------------------------- #


def take_over(sing, host):
    """Routes the host's per-variable update through SING (see the module
    docstring). A host belongs to one SING."""
    if getattr(host, "_sing_hosted", False):
        raise ValueError(
            "Argument `optimizer` is already the host of another SING "
            "optimizer; a host belongs to one SING. Create a new host, e.g. "
            "SING(keras.optimizers.AdamW(...))."
        )
    host._sing_hosted = True
    # the host's own `apply` (what its `apply_gradients` and
    # `stateless_apply` call) would run SING's step without SING's skip;
    # SING applies it through `apply_host`
    host.apply = functools.partial(_applied_on_its_own, host)
    host_update_step = host.update_step
    host.update_step = functools.partial(update_step, sing, host_update_step)
    host._apply_weight_decay = _no_weight_decay
    if keras.backend.backend() == "torch":
        host._backend_update_step = _torch_backend_update_step(sing, host)
    if keras.backend.backend() == "tensorflow":
        host._distributed_tf_update_step = functools.partial(
            distributed_update_step, sing, host._distributed_tf_update_step
        )
    host._backend_update_step = functools.partial(
        backend_update_step, sing, host._backend_update_step
    )


def _no_weight_decay(variables):
    """Stands in for the host's `_apply_weight_decay`: SING decays itself,
    per variable (`decays`)."""
    del variables


def own_weight_decay(host):
    """The host's own `_apply_weight_decay` where its class defines one
    outside Keras (a user's decay rule), else `None`: Keras's rules
    (`w <- w - lr * wd * w`, and Muon's rates) SING applies itself."""
    return _class_weight_decay(type(host))


@functools.cache
def _class_weight_decay(cls):
    """`own_weight_decay` of an instance of `cls`, found once per class
    (it is asked per variable, at every step on torch)."""
    for base in cls.__mro__:
        method = vars(base).get("_apply_weight_decay")
        if method is not None:
            module = base.__module__ or ""
            return None if module.split(".")[0] == "keras" else method
    return None


def mode_offers_decay(sing, variable):
    """Whether `weight_decay_mode` lets `variable` be decayed: every
    variable with `"host"`, those with ndim > 1 with `"paper"`; the
    host's rule decides the rest (`decays`, or a host's own
    `_apply_weight_decay`)."""
    return sing.weight_decay_mode == "host" or len(variable.shape) > 1


def decays(sing, variable):
    """Whether the host's decoupled weight decay applies to `variable`:
    the host's own rule (`weight_decay_rate`, `exclude_from_weight_decay`),
    and with `weight_decay_mode="paper"` only for ndim > 1."""
    host = sing.inner_optimizer
    if not weight_decay_rate(host, variable) or not host._use_weight_decay(
        variable
    ):
        return False
    return mode_offers_decay(sing, variable)


def weight_decay_rate(host, variable):
    """The host's weight decay rate for `variable`: `weight_decay`, or
    Muon's `adam_weight_decay` for the variables Muon updates with AdamW
    (as its own `_apply_weight_decay` decides)."""
    muon = getattr(keras.optimizers, "Muon", None)  # Keras >= 3.12
    if muon is not None and isinstance(host, muon):
        # the Keras variable (TF's update steps see its tf.Variable)
        variable = host._trainable_variables[
            host._get_variable_index(variable)
        ]
        if host._should_use_adamw(variable):
            return host.adam_weight_decay
    return host.weight_decay


def real_step(host, micro_steps):
    """`(t, is_update)` from the host's micro-step counter's value: the
    1-based real update count, and whether this call really updates (False
    on gradient-accumulation micro-steps, which JAX traces through and then
    discards)."""
    accumulation = host.gradient_accumulation_steps
    if not accumulation:
        return ops.add(micro_steps, 1), True
    step = ops.add(ops.floor_divide(micro_steps, accumulation), 1)
    is_update = ops.equal(ops.mod(ops.add(micro_steps, 1), accumulation), 0)
    return step, is_update


def adam_hyper(sing, index, variable):
    """`transforms.AdamHyper` of variable `index` (an Adam/AdamW host)."""
    host = sing.inner_optimizer
    standardize, axes = sing._plans[index]
    return transforms.AdamHyper(
        beta_1=host.beta_1,
        beta_2=host.beta_2,
        weight_decay=(
            weight_decay_rate(host, variable)
            if own_weight_decay(host) is None and decays(sing, variable)
            else 0.0
        ),
        epsilon=sing.epsilon,
        softplus_beta=sing.softplus_beta if sing._softplus else None,
        centralize_axes=axes,
        normalize=sing.normalize,
        standardize=standardize,
        lookahead_steps=sing.lookahead_steps,
        lookahead_alpha=sing.lookahead_alpha,
    )


def _torch_batched():
    """Whether the step takes torch's batched (`_foreach`) form."""
    return keras.backend.backend() == "torch" and TORCH_FAST_PATH


def apply_host(host, grads, trainable_variables=None):
    """The host's own `apply` (its class's), which `take_over` keeps from
    being called on the host directly."""
    return type(host).apply(host, grads, trainable_variables)


def _applied_on_its_own(host, *args, **kwargs):
    raise RuntimeError(
        f"This {type(host).__name__} is the host of a SING optimizer, which "
        "routes the host's update through SING: apply gradients through "
        "the SING (`sing.apply_gradients`), or create a new optimizer to "
        "use it on its own."
    )


def backend_update_step(sing, host_backend_update_step, grads, variables,
                        learning_rate):
    """The host's `_backend_update_step` (every variable's `update_step`,
    after gradient accumulation), inside LookAhead's seed and sync.

    LookAhead acts on all variables at once: one `cond` for the seed before
    the update and one for the sync after it, where a `cond` per variable
    would cost compile time and steps. The functional step
    (`stateless_apply`) seeds ahead of the step instead
    (`seed_lookahead_ahead`). Under `tf.distribute` the update
    runs per variable in the strategy's cross-replica update, so there
    `update_step` does LookAhead per variable instead, after the seed of
    all of them (`distributed_update_step`)."""
    if not sing.lookahead or lookahead_per_variable():
        host_backend_update_step(grads, variables, learning_rate)
        return
    host = sing.inner_optimizer
    pairs = [
        (v, sing._slow_weights[host._get_variable_index(v)]) for v in variables
    ]
    pairs = [(v, s) for v, s in pairs if s is not None]
    slots = [s for _, s in pairs]
    lookahead_variables = [v for v, _ in pairs]
    if _torch_batched():
        _torch_lookahead(sing, host_backend_update_step, grads, variables,
                         learning_rate, lookahead_variables, slots)
        return
    seeded_variables, seeded_slots = lookahead_seed_pairs(sing)
    first, sync = lookahead_flags_for_step(sing)
    if not _STEP.seeded_ahead:
        _assign_when(
            host, first, seeded_slots,
            lambda: transforms.lookahead_seed(
                [read(s) for s in seeded_slots],
                [read(v) for v in seeded_variables],
                True,
            ),
        )
    host_backend_update_step(grads, variables, learning_rate)

    def synced():
        w, slow = transforms.lookahead_sync(
            [read(v) for v in lookahead_variables],
            [read(s) for s in slots],
            True,
            sing.lookahead_alpha,
        )
        return w + slow

    _assign_when(host, sync, lookahead_variables + slots, synced)


def distributed_update_step(sing, host_distributed_update_step, distribution,
                            grads_and_vars, learning_rate):
    """TensorFlow: the host's cross-replica update (each variable's
    `update_step`, in the strategy's `update`), after LookAhead's seed of
    every variable when a strategy runs LookAhead per variable.

    Each variable's update seeds its own slow copy too (`sing_adam_step`),
    but only a variable with a gradient gets an update; the seed here takes
    them all (`lookahead_seed_pairs`), before any weight is written, so a
    variable updated at step 1 gets the same copy twice."""
    if sing.lookahead and lookahead_per_variable():
        from keras_sing.backend import tensorflow as tf_backend

        first, _ = lookahead_flags_for_step(sing)
        variables, slots = lookahead_seed_pairs(sing)
        tf_backend.copy_on_every_device(
            distribution, first, [s.value for s in slots],
            [v.value for v in variables],
        )
    host_distributed_update_step(distribution, grads_and_vars, learning_rate)


def lookahead_seed_pairs(sing):
    """`(variables, slow copies)`: every variable SING was built with that
    has a slow copy, with it. LookAhead's seed (`S <- W` at the first real
    update) takes them all, not only those with a gradient at that step:
    a variable whose first gradient comes later (a `None` gradient, an
    `apply` on a subset) is not written until then, so `W` at the first
    update is `W` at its own first update, and its first sync does not
    pull it towards a zero `S`."""
    pairs = [
        (v, s)
        for v, s in zip(sing._trainable_variables, sing._slow_weights,
                        strict=True)
        if s is not None
    ]
    return [v for v, _ in pairs], [s for _, s in pairs]


def seed_lookahead_ahead(sing, optimizer_values, trainable_values, finite):
    """The functional step's LookAhead seed (`S <- W` at the first real
    update), taken on the values given, ahead of the step: `(optimizer
    values with the slow copies seeded, the step's settings)`.

    The step itself then does not seed (within `step_settings`). The values
    are the same: the step writes no weight before its seed. The compiled
    program is not: seeded inside the step (a `cond` that reads every
    weight before the update overwrites it), XLA copies every weight out
    of the step on every step, to keep the buffers of the `cond`s apart;
    seeded ahead, it copies only in the seeding branch. `finite` (`None`
    with `on_nonfinite="ignore"`) is part of the predicate, so a skipped
    step seeds nothing."""
    if not sing.lookahead or lookahead_per_variable():
        return optimizer_values, {}
    host = sing.inner_optimizer
    state = sing.variables
    counter = position(state, micro_step_counter(host))
    step, is_update = real_step(host, optimizer_values[counter])
    first, _ = transforms.lookahead_flags(step, sing.lookahead_steps, is_update)
    if finite is not None:
        first = ops.logical_and(first, finite)
    pairs = [
        (position(state, slow), trainable_values[i])
        for i, slow in enumerate(sing._slow_weights)
        if slow is not None
    ]
    seeded = transforms.lookahead_seed(
        [optimizer_values[j] for j, _ in pairs], [w for _, w in pairs], first
    )
    optimizer_values = list(optimizer_values)
    for (j, _), value in zip(pairs, seeded, strict=True):
        optimizer_values[j] = value
    return optimizer_values, {"seeded_ahead": True}


def position(variables, variable):
    """The index of `variable` in `variables`, by identity."""
    return next(i for i, v in enumerate(variables) if v is variable)


def lookahead_per_variable():
    """Whether LookAhead runs in each variable's `update_step` (under a
    `tf.distribute` strategy) rather than around all of them."""
    if keras.backend.backend() != "tensorflow":
        return False
    from keras_sing.backend import tensorflow as tf_backend

    return tf_backend.has_strategy()


def _assign_when(host, pred, targets, new_values):
    """`targets[i] <- new_values()[i]` if the scalar `pred`, in one `cond`.

    JAX's functional step selects the values (a `cond` returning either
    the new or the current ones); the stateful backends write inside the
    branch, so that a false `pred` writes nothing."""
    if keras.backend.backend() == "jax":
        values = backend_lib.cond(
            pred, new_values, lambda: [read(t) for t in targets]
        )
        for target, value in zip(targets, values, strict=True):
            host.assign(target, value)
        return

    def write():
        for target, value in zip(targets, new_values(), strict=True):
            host.assign(target, value)

    backend_lib.cond(pred, write, lambda: None)


def host_steps_alone(variable):
    """Whether SING leaves `variable` to the host's own step, as without
    SING (no statistics, slow copy or norm): a non-float dtype (nothing
    to standardize, no NaN to find), or no elements (nothing to
    standardize; on TensorFlow, `ops.add` takes its bias-add path on a
    `(0, n)` operand and fails)."""
    return not keras.backend.is_float_dtype(variable.dtype) or (
        0 in tuple(variable.shape)
    )


def update_step(sing, host_update_step, gradient, variable, learning_rate):
    """SING's step for one variable, in the host's `update_step` place. A
    variable SING leaves alone (`host_steps_alone`) gets the host's own
    step, as without SING.

    The published Adam step decays and runs LookAhead inside its one
    function (`transforms.sing_adam_step`); with a host's own decay rule
    (`own_weight_decay`), and for other hosts, they run around the update:
    seed, decay, update, sync, in the published order."""
    if host_steps_alone(variable):
        host_update_step(gradient, variable, learning_rate)
        return
    host = sing.inner_optimizer
    index = host._get_variable_index(variable)
    step, is_update = real_step(host, read(host._iterations))
    per_variable = sing.lookahead and lookahead_per_variable()
    slow_var = sing._slow_weights[index] if per_variable else None
    standardize, _ = sing._plans[index]
    if standardize or sing._published_adam:
        gradient = backend_lib.densify(gradient)
    own_decay = own_weight_decay(host)
    if sing._published_adam and own_decay is None:
        slow, norm = _published_adam_update(
            sing, index, gradient, variable, slow_var, step, learning_rate,
            is_update,
        )
    else:
        slow = None
        if slow_var is not None:
            first, sync = transforms.lookahead_flags(
                step, sing.lookahead_steps, is_update
            )
            slow = transforms.lookahead_seed(
                read(slow_var), read(variable), first
            )
        _decay(sing, host, variable, learning_rate, own_decay)
        if sing._published_adam:
            _, norm = _published_adam_update(
                sing, index, gradient, variable, None, step, learning_rate,
                is_update,
            )
        else:
            gradient, norm = _standardize_for_host(
                sing, index, gradient, statistics_for(host, variable)
            )
            host_update_step(gradient, variable, learning_rate)
        if slow is not None:
            w, slow = transforms.lookahead_sync(
                read(variable), slow, sync, sing.lookahead_alpha
            )
            host.assign(variable, w)
    if slow_var is not None:
        host.assign(slow_var, slow)
    _record_gradient_norm(sing, index, norm, is_update)


def _published_adam_update(sing, index, gradient, variable, slow_var, step,
                           learning_rate, is_update):
    """The published Adam step of variable `index`, written to the host's
    slots and the variable: `(slow copy, ||g||)`."""
    host = sing.inner_optimizer
    v_max = host._velocity_hats[index] if host.amsgrad else None
    w, m, v, v_max_new, slow, norm = _sing_adam_step(
        gradient,
        read(variable),
        read(host._momentums[index]),
        read(host._velocities[index]),
        None if slow_var is None else read(slow_var),
        step,
        learning_rate,
        hyper=adam_hyper(sing, index, variable),
        v_max=None if v_max is None else read(v_max),
        is_update=is_update,
        statistics=statistics_for(host, variable),
    )
    host.assign(host._momentums[index], m)
    host.assign(host._velocities[index], v)
    if v_max is not None:
        host.assign(v_max, v_max_new)
    host.assign(variable, w)
    return slow, norm


def _decay(sing, host, variable, learning_rate, own_decay):
    """Decoupled weight decay (3) of `variable`, by the host's own rule
    where it has one (`own_weight_decay`), else `w <- w - lr * wd * w`."""
    if own_decay is not None:
        if mode_offers_decay(sing, variable):
            own_decay(host, [variable])
        return
    if decays(sing, variable):
        w = read(variable)
        host.assign(
            variable,
            transforms.decoupled_weight_decay(
                w,
                ops.cast(learning_rate, w.dtype),
                ops.cast(weight_decay_rate(host, variable), w.dtype),
            ),
        )


def _standardize_for_host(sing, index, gradient, statistics):
    """(1)-(2) for a host's own update: `(gradient, ||g||)`. A gradient
    SING leaves unchanged (`exclude`, or both transforms off) reaches the
    host as given, sparse included."""
    standardize, axes = sing._plans[index]
    if statistics is None:
        # the norm of a sparse gradient's values, which SING records
        statistics = transforms.standardization_statistics(
            backend_lib.densify(gradient), axes, centralize_=standardize
        )
    return transforms.standardize_with_norm(
        gradient, axes, sing.epsilon, centralize_=standardize,
        normalize_=standardize and sing.normalize, statistics=statistics,
    )


def _record_gradient_norm(sing, index, norm, is_update):
    slot = sing._gradient_norms[index]
    norm = ops.cast(norm, "float32")
    if is_update is not True:
        norm = ops.where(is_update, norm, read(slot))
    sing.inner_optimizer.assign(slot, norm)


# ---------------------------------------------------------------------- #
# torch: the batched step.
# ---------------------------------------------------------------------- #


def _torch_backend_update_step(sing, host):
    """The `_backend_update_step` SING installs on a torch host: the
    batched step of `keras_sing.backend.torch` where it applies, else the
    host's non-fused path (which calls `update_step`)."""
    from keras.src.backend.torch.optimizers.torch_parallel_optimizer import (
        TorchParallelOptimizer,
    )

    from keras_sing.backend import torch as torch_backend

    fused_host = isinstance(host, TorchParallelOptimizer)
    if fused_host:
        generic = super(TorchParallelOptimizer, host)._backend_update_step
        host_fused = host._backend_update_step
    else:
        generic, host_fused = host._backend_update_step, None

    def backend_update_step(grads, trainable_variables, learning_rate):
        weights = _torch_values(trainable_variables)
        usable = torch_backend.all_full_precision(weights) and (
            sing._published_adam or host_fused is not None
        )
        with torch_backend.no_grad():
            if TORCH_FAST_PATH and usable:
                _torch_fused_step(
                    sing, host, host_fused, grads, trainable_variables,
                    weights, learning_rate,
                )
            else:
                generic(grads, trainable_variables, learning_rate)

    return backend_update_step


def _torch_values(variables):
    """`[read(v) for v in variables]` for torch's batched step, fast.

    Outside a stateless scope, an autocast scope and a symbolic
    (meta-device) call, `keras.Variable.value` is the variable's own
    tensor, `_value`, and is read as such: the property costs ~3.5 us of
    Python per read, and the batched step reads every weight and slot
    (~1400 reads, ~5 ms, per step of ViT-B/16's 198 variables), on the
    thread that launches the GPU's kernels."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope
    from keras.src.backend.common.variables import get_autocast_scope
    from keras.src.backend.torch.core import get_device

    if (
        in_stateless_scope()
        or get_autocast_scope() is not None
        or str(get_device()) == "meta"
    ):
        return [read(v) for v in variables]
    return [
        v._value if isinstance(v, keras.Variable) else v for v in variables
    ]


def _torch_fused_step(sing, host, host_fused, grads, keras_vars, weights,
                      learning_rate):
    """`update_step` for all variables at once, with `_foreach` kernels;
    `weights` are `keras_vars`' tensors (`_torch_values`)."""
    from keras_sing.backend import torch as torch_backend

    index = [host._get_variable_index(v) for v in keras_vars]
    # max|g| from the finiteness check (max|g| has g's dtype), where the
    # gradient reaches the step in its variable's dtype (`like` casts the
    # others: they are measured again)
    checked = _STEP.maxima or {}
    maxima = [checked.get(host._var_key(v)) for v in keras_vars]
    maxima = [
        m if m is not None and m.dtype == w.dtype else None
        for m, w in zip(maxima, weights, strict=True)
    ]
    grads = torch_backend.like(grads, weights)
    # t: the real step, on the device (no synchronization): Keras's public
    # `iterations` is already the micro-step counter divided by n, and
    # torch runs this only on real updates, after the accumulation cond
    t = torch_backend.scalar_like(read(host.iterations), weights[0]) + 1
    lr = torch_backend.scalar_like(read(learning_rate), weights[0])
    own_decay = own_weight_decay(host)
    if own_decay is not None:
        own_decay(
            host, [v for v in keras_vars if mode_offers_decay(sing, v)]
        )
    elif host.weight_decay:
        torch_backend.decoupled_weight_decay(
            [
                w
                for w, v in zip(weights, keras_vars, strict=True)
                if decays(sing, v)
            ],
            lr,
            host.weight_decay,
        )
    plans = [sing._plans[i] for i in index]
    grads, norms = torch_backend.standardize(
        grads,
        [axes if standardize else None for standardize, axes in plans],
        [standardize and sing.normalize for standardize, _ in plans],
        sing.epsilon,
        maxima=maxima,
    )
    torch_backend.copy_into(
        _torch_values([sing._gradient_norms[i] for i in index]), norms
    )
    if sing._published_adam:
        torch_backend.published_adam(
            grads,
            weights,
            _torch_values([host._momentums[i] for i in index]),
            _torch_values([host._velocities[i] for i in index]),
            _torch_values([host._velocity_hats[i] for i in index])
            if host.amsgrad
            else None,
            t,
            lr,
            float(host.beta_1),
            float(host.beta_2),
            sing.epsilon,
            sing.softplus_beta if sing._softplus else None,
        )
    else:
        host_fused(grads, keras_vars, learning_rate)


def _torch_lookahead(sing, host_backend_update_step, grads, variables,
                     learning_rate, lookahead_variables, slots):
    """`backend_update_step`'s LookAhead as in-place `_foreach` kernels.

    LookAhead touches S only at t = 1 and every k-th step, so its flags
    are read on the host, before any of the step's kernels is launched:
    with the finiteness flag where `finiteness_check` read them
    (`lookahead_flags_for_step`), else in one read of their own. No read
    follows the launch, so the host does not wait for the update to run
    and can go on to the next step's work."""
    from keras_sing.backend import torch as torch_backend

    flags = _STEP.lookahead_flags
    if flags is None:
        flags = torch_backend.read_flags(lookahead_flags_for_step(sing))
    first, sync = flags
    weights = _torch_values(lookahead_variables)
    slow = _torch_values(slots)
    with torch_backend.no_grad():
        if first:
            seeded_variables, seeded_slots = lookahead_seed_pairs(sing)
            torch_backend.lookahead_seed(
                _torch_values(seeded_slots), _torch_values(seeded_variables)
            )
        host_backend_update_step(grads, variables, learning_rate)
        if sync:
            torch_backend.lookahead_sync(weights, slow, sing.lookahead_alpha)


# ---------------------------------------------------------------------- #
# Finiteness.
# ---------------------------------------------------------------------- #


class _StepSettings(threading.local):
    """What the code ahead of a step hands to the step, per thread (under
    `tf.distribute` replicas run in threads), set by `step_settings`. A
    thread-local object rather than `contextvars`: `torch.compile` traces
    its attributes, where a `ContextVar`'s `get` breaks the graph (and
    inside the host's name scope, runs the whole step uncompiled). The
    attributes are set in `__init__` (once per thread): dynamo mis-guards
    a thread-local's class-level defaults."""

    def __init__(self):
        super().__init__()
        # the step's gradient statistics, computed ahead of it by
        # `finiteness_check` for the host's `update_step`s within the step
        self.statistics = None
        # torch's batched step: the gradients' max|g| from the finiteness
        # check, `{variable key: max}`, which the norm scale reuses
        self.maxima = None
        # JAX's functional step: LookAhead's seed was taken ahead of it
        self.seeded_ahead = False
        # torch's batched step: LookAhead's `(first, sync)` for the step,
        # as Python bools, read on the host with the finiteness flag by
        # `finiteness_check`
        self.lookahead_flags = None


_STEP = _StepSettings()


class step_settings:  # noqa: N801 (used as a function: `with ...(...)`)
    """A context manager: `_STEP`'s attributes set to `settings` (what
    `finiteness_check` and `seed_lookahead_ahead` return) for the duration
    of the step, then put back. Built where it is entered: torch.compile
    can enter it only there."""

    def __init__(self, **settings):
        self.settings = settings
        self.previous = None

    def __enter__(self):
        self.previous = {name: getattr(_STEP, name) for name in self.settings}
        for name, value in self.settings.items():
            setattr(_STEP, name, value)

    def __exit__(self, *exc_info):
        for name, value in self.previous.items():
            setattr(_STEP, name, value)
        return False


def finiteness_check(sing, grads, variables, *, stateful=False, value_of=read):
    """`(finite, settings)`: whether no gradient holds a NaN or an inf, and
    what the step reads, to run it within `step_settings(**settings)`.

    Where the host applies the gradients as given (no accumulation,
    clipping or loss-scale factor), SING's standardization statistics
    (`transforms.standardization_statistics`: the unit mean and the scaled
    norm) are computed here, ahead of the step: their scaled norm tells
    whether a gradient holds a NaN or an inf, so the check needs no pass
    of its own, and within the settings each `update_step` uses them
    instead of computing them again. On torch's batched step the check's
    max|g| (`backend.torch.max_abs`) plays that part: the step's norm
    scale reuses it; `finite` is read on the host (a Python bool), and for
    a `stateful` step (`apply`, whose counter is the variable's own)
    LookAhead's flags with it, in one synchronization. Where the host
    unscales, accumulates or clips the gradients, what it forms from them
    is checked (`host_step_is_finite`: finite terms can overflow there)
    and the settings are empty; `value_of(variable)` reads the
    accumulators and the counter (their values in a functional step).
    For variables SING was not built with (the host's `apply` raises),
    the raw gradients are checked (`all_finite`)."""
    host = sing.inner_optimizer
    transformed = transforms_gradients(host)
    batched = _torch_batched()
    # a variable SING was not built with: the host's `apply` raises
    unknown = any(
        host._var_key(v) not in host._trainable_variables_indices
        for v in variables
    )
    if batched and not (transformed or unknown):
        from keras_sing.backend import torch as torch_backend

        tensors = _torch_tensors(grads)
        maxima = torch_backend.max_abs(tensors)
        finite = torch_backend.all_finite(maxima)
        # by variable, for the step: keys that stay the same from step to
        # step (a gradient's `id` would become a guard that every new
        # gradient fails under torch.compile)
        maxima = {
            host._var_key(v): m
            for v, m in zip(variables, maxima, strict=True)
            if m is not None
        }
        # read on the host here, ahead of the host's `apply`, so the step
        # has no read of its own: under torch.compile, a read inside the
        # host's name scope would run the whole step uncompiled
        lookahead = stateful and sing.lookahead
        finite, *flags = torch_backend.read_flags(
            [finite, *(lookahead_flags_for_step(sing) if lookahead else ())]
        )
        if not lookahead:
            return finite, {"maxima": maxima}
        return finite, {"maxima": maxima, "lookahead_flags": tuple(flags)}
    if unknown:
        return all_finite(grads), {}
    if transformed:
        return host_step_is_finite(host, grads, variables, value_of), {}
    statistics = {}
    for gradient, variable in zip(grads, variables, strict=True):
        # a non-float or empty variable's gradient cannot hold a NaN or
        # an inf
        if gradient is None or host_steps_alone(variable):
            continue
        standardize, axes = sing._plans[host._get_variable_index(variable)]
        statistics[host._var_key(variable)] = (
            _standardization_statistics(
                backend_lib.densify(gradient),
                axes=axes if standardize else None,
            )
        )
    finite = _all_true([finite for _, _, finite in statistics.values()])
    return finite, {"statistics": statistics}


def _all_true(flags):
    """A scalar boolean: every flag of `flags` (scalar booleans) is true;
    true for none."""
    return ops.all(ops.stack(flags)) if flags else ops.convert_to_tensor(True)


def _each_is_finite(tensors):
    """`all_finite` elementwise (`isfinite` on every element, `None`s
    ignored), for values whose overflow XLA could fold out of `0 * x`."""
    return _all_true(
        [ops.all(ops.isfinite(g)) for g in tensors if g is not None]
    )


def transforms_gradients(host):
    """Whether the host's `apply` changes the gradients before its step:
    gradient accumulation, clipping, or a loss-scale factor."""
    return bool(
        host.gradient_accumulation_steps
        or host.clipnorm
        or host.clipvalue
        or host.global_clipnorm
        or host.loss_scale_factor
    )


def host_step_is_finite(host, grads, variables, value_of=read):
    """A scalar boolean: whether what the host's `apply` forms from
    `grads` is finite: the gradients as it sums them
    (`gradients_as_the_host_sums_them`), and what its clipping computes
    from them (`global_norm_is_finite`, `clipnorm_product_is_finite`)."""
    summed = gradients_as_the_host_sums_them(host, grads, variables, value_of)
    if _torch_batched() or host.loss_scale_factor is None:
        finite = all_finite(summed)
    else:
        # XLA rewrites `0 * (G * c)` as `(0 * c) * G`, which hides an
        # overflow of `G / loss_scale_factor` from `all_finite`'s `0 * x`
        finite = _each_is_finite(summed)
    if host.global_clipnorm:
        finite = ops.logical_and(
            finite, global_norm_is_finite(host, summed, variables, value_of)
        )
    if host.clipnorm:
        finite = ops.logical_and(
            finite,
            clipnorm_product_is_finite(host, summed, variables, value_of),
        )
    return finite


def gradients_as_the_host_sums_them(host, grads, variables, value_of=read):
    """What the host's `apply` forms from `grads` before clipping:
    `G / loss_scale_factor`, then, with gradient accumulation, `G + A`
    with `A` the variable's accumulator (Keras's
    `BaseOptimizer._backend_apply_gradients`: the micro-step stores it,
    the update step divides it by the number of steps). Their finiteness
    is the step's: two finite terms can sum to an inf (float16 at 6.5e4),
    which standardization would spread as NaN over the whole tensor.
    (Clipping can overflow too: `global_clipnorm`'s norm,
    `global_norm_is_finite`, and `clipnorm`'s product,
    `clipnorm_product_is_finite`. `clipnorm`'s per-tensor norm overflowing
    zeroes that tensor's step, as for the host alone.)"""
    accumulating = host.gradient_accumulation_steps
    # a sparse gradient's values hold its finiteness; a sum needs it dense
    as_checked = backend_lib.densify if accumulating else backend_lib.values_of
    grads = [None if g is None else as_checked(g) for g in grads]
    # Keras writes these (float8 scales) as given, before all of it
    kept = [_overwritten_with_gradient(v) for v in variables]
    scale = host.loss_scale_factor
    if scale is not None:
        grads = [
            g if g is None or k else g / scale
            for g, k in zip(grads, kept, strict=True)
        ]
    if not accumulating:
        return grads
    accumulators = host._accumulated_gradients
    return [
        g if g is None or k else ops.add(
            g, value_of(accumulators[host._get_variable_index(v)])
        )
        for g, v, k in zip(grads, variables, kept, strict=True)
    ]


def _overwritten_with_gradient(variable):
    return bool(getattr(variable, "overwrite_with_gradient", False))


def _as_the_host_clips_them(host, summed, variables):
    """The gradients the host's `_clip_gradients` receives, from `summed`
    as `gradients_as_the_host_sums_them` gives them (an update step's
    accumulated sum divided by the number of steps), without those the
    host writes as given."""
    summed = [
        g for g, v in zip(summed, variables, strict=True)
        if g is not None and not _overwritten_with_gradient(v)
    ]
    accumulation = host.gradient_accumulation_steps
    if accumulation:
        summed = [g / accumulation for g in summed]
    return summed


def _on_update_steps(host, finite, value_of):
    """`finite`, or true on a gradient-accumulation micro-step, where the
    host does not clip."""
    if not host.gradient_accumulation_steps:
        return finite
    _, is_update = real_step(host, value_of(host._iterations))
    return ops.logical_or(ops.logical_not(is_update), finite)


def global_norm_is_finite(host, summed, variables, value_of=read):
    """Whether the global norm the host's `global_clipnorm` clips by is
    finite: Keras's `clip_by_global_norm` takes `sqrt(sum(sum(g^2)))` in
    the gradients' dtype (float16 overflows at |g| ~ 256) and turns every
    gradient into NaN when it is not. `summed` as
    `gradients_as_the_host_sums_them` gives them; on a
    gradient-accumulation micro-step the host does not clip: true."""
    clipped = _as_the_host_clips_them(host, summed, variables)
    squares = [ops.sum(ops.square(g)) for g in clipped]
    if not squares:
        return ops.convert_to_tensor(True)
    finite = ops.isfinite(ops.sum(ops.stack(squares)))
    return _on_update_steps(host, finite, value_of)


def clipnorm_product_is_finite(host, summed, variables, value_of=read):
    """Whether `clipnorm * g` is finite for every gradient: Keras's
    `_clip_by_norm` multiplies by `clipnorm` before it divides by the
    norm, so with a `clipnorm` above 1 a finite gradient within that
    factor of the dtype's largest value becomes `inf / inf = NaN` (with
    one of 1 or less the product cannot overflow: true, and no pass).
    `summed` as `gradients_as_the_host_sums_them` gives them; on a
    gradient-accumulation micro-step the host does not clip: true."""
    if not host.clipnorm > 1:
        return ops.convert_to_tensor(True)
    clipped = _as_the_host_clips_them(host, summed, variables)
    if not clipped:
        return ops.convert_to_tensor(True)
    products = [g * host.clipnorm for g in clipped]
    return _on_update_steps(host, _each_is_finite(products), value_of)


def lookahead_flags_for_step(sing):
    """LookAhead's `(first, sync)` for the step about to run, as tensors,
    from the host's micro-step counter (both false on a
    gradient-accumulation micro-step)."""
    host = sing.inner_optimizer
    step, is_update = real_step(host, read(host._iterations))
    return transforms.lookahead_flags(step, sing.lookahead_steps, is_update)


def _torch_tensors(grads):
    """The gradients' values as torch tensors: tensors as they are (Keras's
    `convert_to_tensor` costs ~6 us of Python each), anything else
    converted."""
    from keras.ops import convert_to_tensor

    from keras_sing.backend import torch as torch_backend

    values = [None if g is None else backend_lib.values_of(g) for g in grads]
    return [
        g if g is None or torch_backend.is_tensor(g) else convert_to_tensor(g)
        for g in values
    ]


def statistics_for(host, variable):
    """The statistics `finiteness_check` computed for `variable`'s
    gradient in this step, or `None`."""
    statistics = _STEP.statistics
    if statistics is None:
        return None
    return statistics.get(host._var_key(variable))


def all_finite(grads):
    """A scalar boolean: no gradient holds a NaN or an infinity
    (`transforms.all_finite`, batched on torch)."""
    if _torch_batched():
        from keras_sing.backend import torch as torch_backend

        return torch_backend.all_finite(
            torch_backend.max_abs(_torch_tensors(grads))
        )
    values = [None if g is None else backend_lib.values_of(g) for g in grads]
    return transforms.all_finite(values)


def stateless_apply_unchecked(sing, optimizer_values, grads, trainable_values):
    """The host's `apply` in a `StatelessScope` (JAX's functional step):
    `(new trainable values, new optimizer values)` in the order of
    `sing._trainable_variables` and `sing.variables`."""
    mapping = list(
        zip(sing._trainable_variables, trainable_values, strict=True)
    ) + list(zip(sing.variables, optimizer_values, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        apply_host(sing.inner_optimizer, grads)
    return (
        [scope.get_current_value(v) for v in sing._trainable_variables],
        [scope.get_current_value(v) for v in sing.variables],
    )


def apply_per_replica_if_finite(sing, grads, trainable_variables):
    """tf.distribute: the step on every replica if all are finite, each
    replica checking what its host forms from its gradients
    (`host_step_is_finite`: Keras unscales and clips per replica, before
    the all-reduce; the all-reduced sum is not checked)."""
    from keras_sing.backend import tensorflow as tf_backend

    host = sing.inner_optimizer
    variables = trainable_variables or sing._trainable_variables

    def replica_finite(replica_grads):
        return host_step_is_finite(host, replica_grads, variables)

    tf_backend.apply_if_all_replicas_finite(
        replica_finite,
        lambda g: apply_host(host, g, trainable_variables),
        sing._count_skipped_step,
        lambda finite: sing._raise_if_requested(
            finite, lambda: ops.add(read(sing.inner_optimizer.iterations), 1)
        ),
        grads,
    )


def in_jax_stateless_scope():
    """Whether `apply` runs on JAX inside a `keras.StatelessScope`: a
    wrapper's `stateless_apply` (Keras's `MultiOptimizer`, a user's) that
    calls SING's `apply`. There, writes are recorded by the scope, and a
    `cond` whose branches write would leak its tracers out of the branch:
    SING takes its functional step instead (`SING.stateless_apply`)."""
    if keras.backend.backend() != "jax":
        return False
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    return in_stateless_scope()


def in_tf_replica_context():
    if keras.backend.backend() != "tensorflow":
        return False
    from keras_sing.backend import tensorflow as tf_backend

    return tf_backend.in_replica_context()
