"""The "a skipped step changes nothing" grid.

Contract of `on_nonfinite="skip"` (the default): a step whose gradients hold
a NaN or an inf leaves EVERY variable bit-identical, the model's weights and
everything in `opt.variables` (host slots, host iteration counter, gradient
accumulators, EMA copies, LookAhead slow weights, SING's recorded gradient
norms, ...), and only `opt.skipped_steps` grows, by exactly 1. The step after
it trains normally (nothing turns NaN).

Axes of the grid:

- host: AdamW (SING's published Adam step), SGD(momentum=0.9), Lion,
  RMSprop(momentum, centered) (each its own update on SING's gradient);
- option: `plain`; `ema` (host `use_ema=True`, `ema_overwrite_frequency=None`);
  `accum_micro` / `accum_update` (host `gradient_accumulation_steps=2`, the
  bad gradient on the accumulation micro-step / on the micro-step that
  really updates); `clipnorm` (host `clipnorm=1.0`); `lso` (SING inside
  `keras.optimizers.LossScaleOptimizer`);
- lookahead: LookAhead (k = `K` = 2, counted in real updates, after
  accumulation) `seed`s its slow weights at the bad step (real step 1, the
  first update), `sync`s at it (real step 2), or does neither (`nosync`,
  real step 3, after a sync at step 2 gave the slow weights a value of
  their own);
- kind: the bad value, `nan`, `inf`, `-inf`, in one element of one variable's
  gradient (a different variable per kind: the 2-D kernel, the 1-D bias, the
  3-D kernel);
- path: `eager` `opt.apply_gradients` (every backend; on torch the normal
  path), `tf_xla` (TF: `tf.function(jit_compile=True)` around
  `apply_gradients`), `jax_jit` (JAX: `jax.jit(opt.stateless_apply)`, the
  functional path that JAX's `fit` also takes), and `fit` (a representative
  subset, compiled: XLA on TF and JAX, plain on torch; not `torch.compile`,
  too slow to compile here, see `FIT_PARAMS`: `tests/test_torch_fast_path.py`
  has one `torch.compile` case, AdamW with LookAhead's seed, sync or neither
  at the bad step).

Under `LossScaleOptimizer` the loss-scale optimizer checks the gradients
itself and never calls SING on a non-finite step. The contract there: the
weights and all of SING's and the host's variables stay bit-identical
(SING's `skipped_steps` included: SING never saw the step), and LSO does its
own documented bookkeeping: `dynamic_scale` is halved and `step_counter`
reset to 0.

Cost: the compiled step of a (path, host, option) configuration is built once
and shared by its (lookahead, kind) cases (and by `accum_micro` and
`accum_update`, the same configuration); each case restores the initial
state first.
"""

import copy

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import to_numpy

import keras_sing

K = 2  # lookahead_steps
ACCUMULATION = 2  # gradient_accumulation_steps of the accumulation options
SHAPES = {"kernel": (4, 3), "bias": (3,), "cube": (2, 3, 2)}
KINDS = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}
# where each kind lands: (variable, element)
POISON = {"nan": ("kernel", (1, 2)), "inf": ("bias", (1,)), "-inf": ("cube", (0, 1, 0))}

HOSTS = {
    "adamw": lambda **kw: keras.optimizers.AdamW(1e-2, weight_decay=1e-2, **kw),
    "sgd": lambda **kw: keras.optimizers.SGD(1e-2, momentum=0.9, **kw),
    "lion": lambda **kw: keras.optimizers.Lion(1e-3, **kw),
    "rmsprop": lambda **kw: keras.optimizers.RMSprop(
        1e-3, momentum=0.5, centered=True, **kw
    ),
}

# option -> (configuration key, host kwargs, wrap in LSO, micro-step of the bad
# gradient within its real step)
OPTIONS = {
    "plain": ("plain", {}, False, 0),
    "ema": ("ema", {"use_ema": True, "ema_overwrite_frequency": None}, False, 0),
    "accum_micro": ("accum", {"gradient_accumulation_steps": ACCUMULATION}, False, 0),
    "accum_update": (
        "accum",
        {"gradient_accumulation_steps": ACCUMULATION},
        False,
        ACCUMULATION - 1,
    ),
    "clipnorm": ("clipnorm", {"clipnorm": 1.0}, False, 0),
    "lso": ("lso", {}, True, 0),
}
# options of the overflow test only (not in the grid)
OVERFLOW_OPTIONS = {
    "accum3": ("accum3", {"gradient_accumulation_steps": 3}, False, None),
    "unscale": ("unscale", {"loss_scale_factor": 0.5}, False, None),
    "global_clipnorm": ("global_clipnorm", {"global_clipnorm": 1.0}, False, None),
    "accum_global_clipnorm": (
        "accum_global_clipnorm",
        {"gradient_accumulation_steps": 2, "global_clipnorm": 1.0},
        False,
        None,
    ),
    "clipnorm2": ("clipnorm2", {"clipnorm": 2.0}, False, None),
    "accum_clipnorm4": (
        "accum_clipnorm4",
        {"gradient_accumulation_steps": 2, "clipnorm": 4.0},
        False,
        None,
    ),
}
ALL_OPTIONS = {**OPTIONS, **OVERFLOW_OPTIONS}


@pytest.fixture(autouse=True)
def _fresh_session():
    """Replaces conftest's per-test `clear_session()`, whose `gc.collect()`
    cost ~0.35 s per case here (150 s of the 240 s this file took on TF):
    the grid's runners are cached across cases on purpose, and the fit
    cases clear the session themselves (`FitRunner.build`)."""
    yield


def make_optimizer(host, option):
    _, host_kwargs, lso, _ = ALL_OPTIONS[option]
    sing = keras_sing.SING(HOSTS[host](**host_kwargs), lookahead_steps=K)
    if lso:
        return keras.optimizers.LossScaleOptimizer(sing, initial_scale=8.0), sing
    return sing, sing


def _index_of(variables, variable):
    return next(i for i, v in enumerate(variables) if v is variable)


# ---------------------------------------------------------------------- #
# Runners: one (path, host, option) configuration, its state kept between
# cases and restored to the initial one by `reset`.
# ---------------------------------------------------------------------- #


class Runner:
    """Holds weights and an optimizer; `values()` are numpy copies of the
    weights then `opt.variables`, named in `names`."""

    def __init__(self, host, option):
        self.opt, self.sing = make_optimizer(host, option)
        self.lso = self.opt is not self.sing
        self.accumulation = self.sing.inner_optimizer.gradient_accumulation_steps or 1
        self.build()
        opt_vars = self.opt.variables
        self.skipped_index = len(self.weights) + _index_of(opt_vars, self.sing._skipped_steps)
        self.lso_indices = {}
        if self.lso:
            self.lso_indices = {
                name: len(self.weights) + _index_of(opt_vars, getattr(self.opt, name))
                for name in ("step_counter", "dynamic_scale")
            }
        self.names = [f"weight {v.path}" for v in self.weights] + [
            f"opt.variables[{i}] {v.path}" for i, v in enumerate(opt_vars)
        ]
        self.initial = self.values()
        self.positions = {}
        self.reset()

    def reset(self):
        self.micro = 0  # good micro-steps applied since the reset
        self.rng = np.random.default_rng(0)
        self.set_values(self.initial)

    def go_to(self, lookahead, bad_micro):
        """Puts the runner just before the chosen bad micro-step: the good
        steps there are run once per configuration and position, then their
        end state is restored for the other kinds."""
        key = (lookahead, bad_micro)
        if key not in self.positions:
            self.reset()
            advance_to(self, lookahead, bad_micro)
            self.positions[key] = (self.values(), self.micro, copy.deepcopy(self.rng))
        values, self.micro, rng = self.positions[key]
        self.rng = copy.deepcopy(rng)
        self.set_values(values)

    def good(self, n=1):
        for _ in range(n):
            self.step(self.gradients())
            self.micro += 1

    def bad(self, kind):
        grads = self.gradients()
        name, element = POISON[kind]
        grads[list(SHAPES).index(name)][element] = KINDS[kind]
        self.step(grads)

    def gradients(self):
        return [self.rng.standard_normal(s).astype("float32") for s in SHAPES.values()]


class VariablesRunner(Runner):
    """State in `keras.Variable`s (eager and tf.function paths)."""

    def build(self):
        rng = np.random.default_rng(1)
        self.weights = [
            keras.Variable(rng.standard_normal(s).astype("float32"), name=n)
            for n, s in SHAPES.items()
        ]
        self.opt.build(self.weights)

    def all_variables(self):
        return list(self.weights) + list(self.opt.variables)

    def values(self):
        return [np.array(to_numpy(v)) for v in self.all_variables()]

    def set_values(self, values):
        for v, x in zip(self.all_variables(), values, strict=True):
            v.assign(x)


class EagerRunner(VariablesRunner):
    def step(self, grads):
        grads = [keras.ops.convert_to_tensor(g) for g in grads]
        self.opt.apply_gradients(zip(grads, self.weights, strict=True))


class TfXlaRunner(VariablesRunner):
    def build(self):
        import tensorflow as tf

        super().build()

        def apply(grads):
            self.opt.apply_gradients(zip(grads, self.weights, strict=True))

        self.fn = tf.function(apply, jit_compile=True)

    def step(self, grads):
        self.fn([keras.ops.convert_to_tensor(g) for g in grads])


class JaxJitRunner(Runner):
    """State as values, through `jax.jit(opt.stateless_apply)`."""

    def build(self):
        import jax

        rng = np.random.default_rng(1)
        variables = [
            keras.Variable(rng.standard_normal(s).astype("float32"), name=n)
            for n, s in SHAPES.items()
        ]
        self.opt.build(variables)
        self.weights = variables  # for names; the state lives in values
        self.fn = jax.jit(self.opt.stateless_apply)
        self.state = ([v.value for v in variables], [v.value for v in self.opt.variables])

    def values(self):
        weights, optimizer = self.state
        return [np.array(to_numpy(x)) for x in list(weights) + list(optimizer)]

    def set_values(self, values):
        n = len(self.weights)
        self.state = (
            [keras.ops.convert_to_tensor(x) for x in values[:n]],
            [keras.ops.convert_to_tensor(x) for x in values[n:]],
        )

    def step(self, grads):
        weights, optimizer = self.state
        new_weights, new_optimizer = self.fn(
            optimizer, [keras.ops.convert_to_tensor(g) for g in grads], weights
        )
        self.state = (list(new_weights), list(new_optimizer))


RUNNERS = {"eager": EagerRunner, "tf_xla": TfXlaRunner, "jax_jit": JaxJitRunner}
_cache = {}


def runner_for(path, host, option):
    key = (path, host, ALL_OPTIONS[option][0])
    if key not in _cache:
        _cache[key] = RUNNERS[path](host, option)
    return _cache[key]


# ---------------------------------------------------------------------- #
# The check.
# ---------------------------------------------------------------------- #


def at_target(micro, accumulation, lookahead, bad_micro):
    """Whether the micro-step after `micro` good ones is the chosen bad one."""
    t, position = divmod(micro, accumulation)
    t += 1  # the real (LookAhead) step the next micro-step belongs to
    if position != bad_micro:
        return False
    if lookahead == "seed":
        return t == 1
    if lookahead == "sync":
        return t % K == 0
    return t % K != 0 and t > K


def advance_to(runner, lookahead, bad_micro):
    steps = 0
    while not at_target(runner.micro + steps, runner.accumulation, lookahead, bad_micro):
        steps += 1
        assert steps < 20
    runner.good(steps)


def differences(runner, before, after):
    """Names (with the largest change) of the variables that the skipped
    step changed, other than the counters it may change; and the counters'
    own failures."""
    allowed = {runner.skipped_index, *runner.lso_indices.values()}
    changed = []
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if i in allowed:
            continue
        try:
            np.testing.assert_array_equal(b, a)
        except AssertionError:
            delta = np.abs(b.astype(np.float64) - a.astype(np.float64))
            changed.append(f"{runner.names[i]} (max |change| {np.nanmax(delta) if delta.size else 0:.3g}, NaN: {bool(np.isnan(b).any())})")
    skipped_before = int(before[runner.skipped_index])
    skipped_after = int(after[runner.skipped_index])
    if runner.lso:
        # LSO catches the step first: SING never sees it, and LSO halves its
        # scale and restarts its growth counter.
        expected_skipped = skipped_before
        counter = runner.lso_indices["step_counter"]
        scale = runner.lso_indices["dynamic_scale"]
        if int(after[counter]) != 0:
            changed.append(f"LSO step_counter {int(after[counter])}, expected 0")
        if float(after[scale]) != float(before[scale]) / 2:
            changed.append(f"LSO dynamic_scale {float(after[scale])}, expected {float(before[scale]) / 2}")
    else:
        expected_skipped = skipped_before + 1
    if skipped_after != expected_skipped:
        changed.append(f"skipped_steps {skipped_before} -> {skipped_after}, expected {expected_skipped}")
    return changed


def nonfinite(runner, values):
    return [n for n, x in zip(runner.names, values, strict=True) if not np.all(np.isfinite(x))]


def check_bad_step(runner, lookahead, kind, bad_micro):
    """Goes to the chosen micro-step, applies the bad one, runs one good
    step, and returns the contract's failures (empty if none)."""
    runner.go_to(lookahead, bad_micro)
    before = runner.values()
    runner.bad(kind)
    after = runner.values()
    failures = [f"{lookahead}/{kind}: changed {d}" for d in differences(runner, before, after)]
    runner.good()
    failures += [f"{lookahead}/{kind}: NaN/inf after the next good step in {n}" for n in nonfinite(runner, runner.values())]
    return failures


# ---------------------------------------------------------------------- #
# The grid on the cheap paths: every host x option x lookahead x kind.
# ---------------------------------------------------------------------- #

PATHS = [
    pytest.param("eager", id="eager"),
    pytest.param(
        "tf_xla",
        id="tf_xla",
        marks=pytest.mark.skipif(
            BACKEND != "tensorflow",
            reason="tf.function(jit_compile=True) (XLA) is TensorFlow's",
        ),
    ),
    pytest.param(
        "jax_jit",
        id="jax_jit",
        marks=pytest.mark.skipif(
            BACKEND != "jax", reason="jax.jit(opt.stateless_apply) is JAX's functional path"
        ),
    ),
]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("lookahead", ["seed", "sync", "nosync"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("host", list(HOSTS))
@pytest.mark.parametrize("path", PATHS)
def test_skipped_step_changes_nothing(path, host, option, lookahead, kind):
    if path == "eager" and option == "lso" and BACKEND == "jax":
        pytest.skip(
            "Keras's LossScaleOptimizer.apply is stateful ops.cond, which JAX "
            "cannot run eagerly; on JAX LSO runs via stateless_apply (jax_jit)"
        )
    runner = runner_for(path, host, option)
    failures = check_bad_step(runner, lookahead, kind, OPTIONS[option][3])
    assert not failures, "\n".join(failures)


HUGE = 3e38  # finite in float32; the sum of two, twice it, or its square is not


@pytest.mark.parametrize(
    "option, taken, skipped",
    [
        ("accum_update", ["huge"], "huge"),
        ("accum3", ["huge"], "huge"),
        ("unscale", [], "huge"),
        ("global_clipnorm", [], "huge"),
        ("accum_global_clipnorm", ["huge"], "good"),
        ("clipnorm2", [], "huge"),
        ("accum_clipnorm4", ["huge"], "good"),
    ],
    ids=[
        "accumulated_at_the_update",
        "accumulated_at_a_micro_step",
        "unscaled",
        "global_norm",
        "global_norm_of_the_accumulated",
        "clipnorm_times_the_gradient",
        "clipnorm_times_the_accumulated",
    ],
)
@pytest.mark.parametrize("host", ["adamw", "sgd"])
@pytest.mark.parametrize("path", PATHS)
def test_finite_gradients_that_overflow_in_the_hosts_step_are_skipped(path, host, option, taken, skipped):
    """The host steps on `G / loss_scale_factor`, plus its accumulator with
    gradient accumulation, `global_clipnorm` divides by the norm of all
    of them, and `clipnorm` multiplies each by itself before it divides:
    finite gradients can give an inf there (a sum, the norm's squares, or
    the product), which the host, or standardization, turns into NaN.
    The check reads what the host computes, so the step is skipped like
    a NaN gradient's; the finite micro-steps before it are taken (the
    host neither sums past its accumulator nor clips there)."""
    runner = runner_for(path, host, option)
    runner.reset()

    def gradients(kind):
        grads = runner.gradients()
        if kind == "huge":
            grads[0][1, 2] = HUGE
        return grads

    for kind in taken:
        runner.step(gradients(kind))
    assert int(runner.values()[runner.skipped_index]) == 0, "a finite micro-step was skipped"
    before = runner.values()
    runner.step(gradients(skipped))
    after = runner.values()
    failures = differences(runner, before, after)
    runner.good()
    failures += [f"NaN/inf after the next good step in {n}" for n in nonfinite(runner, runner.values())]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "host_kwargs", [{"loss_scale_factor": 0.5}, {"global_clipnorm": 1.0}, {"clipnorm": 2.0}]
)
def test_a_variable_overwritten_with_its_gradient_is_checked_as_given(host_kwargs):
    """Keras writes an `overwrite_with_gradient` variable (float8 scales)
    with its gradient as given, before unscaling and clipping: a finite
    gradient there is a step to take, whatever it would be scaled to."""
    scale = keras.Variable(np.ones((2,), "float32"), name="scale")
    scale.overwrite_with_gradient = True
    kernel = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    opt = keras_sing.SING(keras.optimizers.SGD(1e-2, **host_kwargs))
    opt.apply_gradients([
        (keras.ops.convert_to_tensor(np.full((2,), HUGE, "float32")), scale),
        (keras.ops.convert_to_tensor(np.ones((3, 2), "float32")), kernel),
    ])
    assert int(to_numpy(opt.skipped_steps)) == 0
    np.testing.assert_array_equal(to_numpy(scale), np.full((2,), HUGE, "float32"))


# ---------------------------------------------------------------------- #
# Compiled fit: a representative subset, one model per (host, option),
# two bad batches in its sequence (the first at a LookAhead sync step).
# ---------------------------------------------------------------------- #

BATCH = 4
FIT_CASES = [
    # host, option, [(lookahead, kind), ...]
    ("adamw", "ema", [("sync", "nan"), ("nosync", "inf")]),
    ("adamw", "plain", [("sync", "inf"), ("nosync", "-inf")]),
    ("sgd", "accum_update", [("sync", "inf"), ("nosync", "nan")]),
    ("lion", "accum_micro", [("sync", "nan"), ("nosync", "inf")]),
    ("rmsprop", "clipnorm", [("sync", "-inf"), ("nosync", "nan")]),
    ("sgd", "lso", [("sync", "nan"), ("nosync", "inf")]),
    ("lion", "ema", [("sync", "inf"), ("nosync", "nan")]),
    ("rmsprop", "plain", [("sync", "nan"), ("nosync", "inf")]),
]
FIT_JIT = {"tensorflow": True, "jax": True, "torch": False}[BACKEND]


def _fit_id(case):
    host, option, events = case
    return f"{host}-{option}-" + ",".join(f"{la}:{kind}" for la, kind in events)


class FitRunner(Runner):
    """One `model.fit` over a planned sequence of batches; a bad batch has a
    target of NaN/inf, which makes the MSE loss and the gradients
    non-finite. A callback records every variable at the end of the batches
    around each bad one (on JAX, reading `self.model` syncs the trainer's
    state into the variables). One `fit` call: Keras 3.15's JAX trainer
    cannot `fit` twice with a `use_ema=True` optimizer (its
    `finalize_variable_values` reads a purged variable), and `fit`'s end
    would overwrite the weights with the EMA anyway."""

    def __init__(self, host, option, jit_compile):
        self.jit_compile = jit_compile
        super().__init__(host, option)

    def build(self):
        keras.utils.clear_session(free_memory=False)
        keras.utils.set_random_seed(1)
        self.model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(3),  # 2-D kernel, 1-D bias
                keras.layers.Reshape((3, 1)),
                keras.layers.Conv1D(2, 2),  # 3-D kernel
                keras.layers.Flatten(),
            ]
        )
        self.model.compile(self.opt, "mse", jit_compile=self.jit_compile)
        self.opt.build(self.model.trainable_variables)
        self.weights = self.model.weights

    def all_variables(self):
        return list(self.model.weights) + list(self.opt.variables)

    values = VariablesRunner.values
    set_values = VariablesRunner.set_values

    def run(self, events, bad_micro):
        """The failures of each `(lookahead, kind)` event, in order."""
        rng = np.random.default_rng(2)
        plan = []  # (index of the bad batch, event)
        kinds = []
        for lookahead, kind in events:
            advance_to(self, lookahead, bad_micro)  # counts only (see good)
            plan.append((self.micro, (lookahead, kind)))
            kinds.append(kind)
            self.micro += 1  # the good step after it
        # batch indices: good micro-steps plus the bad batches before
        bad_batches = [m + n for n, (m, _) in enumerate(plan)]
        n = self.micro + len(plan)
        x = rng.standard_normal((n * BATCH, 4)).astype("float32")
        y = rng.standard_normal((n * BATCH, 4)).astype("float32")
        for b, kind in zip(bad_batches, kinds, strict=True):
            y[b * BATCH + 1, 2] = KINDS[kind]
        wanted = {i for b in bad_batches for i in (b - 1, b, b + 1)}
        seen = {}
        runner = self

        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch in wanted:
                    self.model  # noqa: B018 (syncs JAX's state)
                    seen[batch] = runner.values()

        self.model.fit(
            x, y, batch_size=BATCH, shuffle=False, epochs=1, verbose=0,
            callbacks=[Record()],
        )
        failures = []
        for b, (_, (lookahead, kind)) in zip(bad_batches, plan, strict=True):
            failures += [
                f"{lookahead}/{kind} (batch {b}): changed {d}"
                for d in differences(self, seen[b - 1], seen[b])
            ]
            failures += [
                f"{lookahead}/{kind}: NaN/inf after the next good step in {name}"
                for name in nonfinite(self, seen[b + 1])
            ]
        return failures

    def good(self, n=1):  # planning only: `run` feeds the batches
        self.micro += n


FIT_PARAMS = [pytest.param(c, FIT_JIT, id=_fit_id(c)) for c in FIT_CASES]
# No torch.compile case: the smallest one (adamw-plain, 4 batches) took 54 s
# to compile on 2 CPU cores, which this file's budget cannot carry.


@pytest.mark.parametrize("case, jit_compile", FIT_PARAMS)
def test_skipped_fit_step_changes_nothing(case, jit_compile):
    host, option, events = case
    failures = FitRunner(host, option, jit_compile).run(events, OPTIONS[option][3])
    assert not failures, "\n".join(failures)
