"""torch's batched `_foreach` SING step against the generic keras.ops path."""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import to_numpy

import keras_sing

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="keras_sing/backend/torch.py is the torch backend's fast path")

SHAPES = [(6, 4), (3, 3, 2, 5), (5,), (), (7, 1), (0, 3), (4, 3)]


def run(make_opt, fast, steps=7, scale=1.0, zero_at=None, seed=0):
    from keras_sing import _host

    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype("float32") for s in SHAPES]
    grads = [[(rng.standard_normal(s) * scale).astype("float32") for s in SHAPES] for _ in range(steps)]
    if zero_at is not None:
        grads[zero_at] = [np.zeros(s, "float32") for s in SHAPES]
    names = ["kernel", "conv", "bias", "scalar", "column", "empty", "embeddings"]
    variables = [keras.Variable(a, name=n) for a, n in zip(init, names, strict=True)]
    opt = make_opt()
    _host.TORCH_FAST_PATH = fast
    try:
        for g in grads:
            opt.apply([keras.ops.convert_to_tensor(x) for x in g], variables)
    finally:
        _host.TORCH_FAST_PATH = True
    state = [to_numpy(v) for v in opt.variables]
    return [to_numpy(v) for v in variables], state


CONFIGS = {
    "paper": lambda: keras_sing.SING(),
    "adamw_decay_k2": lambda: keras_sing.SING(keras.optimizers.AdamW(1e-2, weight_decay=0.1, beta_1=0.8), lookahead_steps=2, lookahead_alpha=0.7),
    "no_softplus": lambda: keras_sing.SING(keras.optimizers.Adam(1e-2), softplus=False),
    "amsgrad": lambda: keras_sing.SING(keras.optimizers.Adam(1e-2, amsgrad=True)),
    "no_lookahead_no_center": lambda: keras_sing.SING(keras.optimizers.AdamW(1e-2), lookahead=False, centralize=False),
    "exclude": lambda: keras_sing.SING(keras.optimizers.AdamW(1e-2), exclude="bias|scalar"),
    "no_normalize": lambda: keras_sing.SING(keras.optimizers.AdamW(1e-2), normalize=False),
    "sgd": lambda: keras_sing.SING(keras.optimizers.SGD(0.1, momentum=0.9)),
    "lion": lambda: keras_sing.SING(keras.optimizers.Lion(1e-3)),
    "accumulation": lambda: keras_sing.SING(keras.optimizers.AdamW(1e-2, gradient_accumulation_steps=2), lookahead_steps=2),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("scale, zero_at", [(1.0, None), (1e-25, 2), (1e25, None)])
def test_fast_path_matches_generic_path(name, scale, zero_at):
    fast_w, fast_state = run(CONFIGS[name], True, scale=scale, zero_at=zero_at)
    slow_w, slow_state = run(CONFIGS[name], False, scale=scale, zero_at=zero_at)
    for a in fast_w:
        assert np.all(np.isfinite(a))
    # (Adam's second moment overflows float32 when excluded or unnormalized
    # gradients of 1e25 are squared: both paths then hold the same inf.)
    # the tolerance scales with each array's own magnitude (at a scale of
    # 1e-25 the recorded norms and the moments are that small: a floor of
    # 1 would let any value there pass)
    for a, b in zip(fast_w + fast_state, slow_w + slow_state, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6 * float(np.max(np.abs(b), initial=0)))


def test_fast_path_is_used_for_float32():
    from keras_sing import _host

    calls = []
    original = _host._torch_fused_step

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    _host._torch_fused_step = spy
    try:
        run(CONFIGS["paper"], True, steps=2)
    finally:
        _host._torch_fused_step = original
    assert len(calls) == 2


@pytest.mark.parametrize(
    "case",
    [
        [np.ones((3, 2))],
        [np.ones((3, 2)), np.array([1.0, np.nan])],
        [np.array([np.inf]), np.ones(2)],
        [np.array([[-np.inf, 0.0]])],
        [np.array([3e38, -3e38]), np.array([1e-45])],  # huge and tiny: finite
        [np.zeros((0, 3)), np.ones(())],
        [np.zeros((0, 3))],
        [np.array([1.0, np.nan], "float16")],
        [np.array([2.0, 1.0], "float16"), np.array([np.inf], "float64")],
        "numpy",  # users may pass NumPy gradients to apply()
    ],
)
def test_batched_finite_check_matches_generic(case):
    import torch

    from keras_sing import _host
    from keras_sing import transforms

    if case == "numpy":
        grads = case = [np.ones((2, 2), "float32"), np.array([np.nan], "float32")]
    else:
        grads = [torch.as_tensor(np.asarray(g, getattr(g, "dtype", "float32"))) for g in case]
    generic = bool(transforms.all_finite(grads))
    assert bool(_host.all_finite(grads)) == generic
    assert generic == all(np.isfinite(g).all() for g in case)


def test_standardize_with_given_maxima_is_identical():
    """`standardize` with the finiteness check's maxima (`max_abs`) gives
    the same tensors and norms, bit for bit, as when it takes them itself;
    maxima it lacks (other tensors) are computed."""
    import torch

    from keras_sing.backend import torch as torch_backend

    rng = np.random.default_rng(3)
    grads = [torch.as_tensor((rng.standard_normal(s) * 1e20).astype("float32")) for s in SHAPES]
    axes = [(0,), (0, 1, 2), None, None, (0,), (0,), (0,)]
    normalize = [True, True, True, False, True, True, True]
    own = torch_backend.standardize(grads, axes, normalize, 1e-8)
    some = torch_backend.max_abs(grads[:3]) + [None] * (len(grads) - 3)
    for maxima in (torch_backend.max_abs(grads), some):
        given = torch_backend.standardize(grads, axes, normalize, 1e-8, maxima=maxima)
        for a, b in zip(own[0] + own[1], given[0] + given[1], strict=True):
            assert torch.equal(a, b)
    assert some[3:] == [None] * (len(grads) - 3)  # standardize did not write into the maxima it was given


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_batched_norms_are_l2_norm_of_the_centralized_gradient(scale):
    """The batched path's norms are `transforms.l2_norm`'s bounded form
    (`bound=G`, scaled by max|G|) of each centralized gradient, and its
    three-lane form, which the generic path takes, to rounding: also at
    1e-30 and 1e30, where a plain sum of squares would underflow or
    overflow float32."""
    import torch

    from keras_sing import transforms
    from keras_sing.backend import torch as torch_backend

    rng = np.random.default_rng(3)
    shapes = [(6, 4), (4,), (3, 3, 2, 5), (1,)]
    axes = [(0,), None, (0, 1, 2), None]
    grads = [torch.as_tensor((rng.standard_normal(s) * scale).astype("float32")) for s in shapes]
    centered, norms = torch_backend.standardize(grads, axes, [False] * len(grads), 1e-8)
    for g, a, c, n in zip(grads, axes, centered, norms, strict=True):
        expected = transforms.centralize(g, a) if a else g
        np.testing.assert_allclose(to_numpy(c), to_numpy(expected), rtol=1e-5, atol=1e-6 * scale)
        oracle = np.linalg.norm(to_numpy(c).astype(np.float64) / scale) * scale
        for form in (transforms.l2_norm(c, bound=g), transforms.l2_norm(c), n):
            np.testing.assert_allclose(float(form), oracle, rtol=1e-6)


def test_max_abs_is_aligned_with_its_tensors():
    """`max_abs` gives one entry per tensor, in order: max|g|, or None for
    a None or an empty tensor."""
    import torch

    from keras_sing.backend import torch as torch_backend

    arrays = [np.full(s, i + 1.0, "float32") for i, s in enumerate(SHAPES)]
    maxima = torch_backend.max_abs([None] + [torch.as_tensor(-a) for a in arrays])
    assert maxima[0] is None
    for a, m in zip(arrays, maxima[1:], strict=True):
        assert (m is None) if a.size == 0 else float(m) == float(a.max())


def test_step_reuses_the_finiteness_check_maxima():
    """One max|g| pass per step on torch's batched path: the step's norm
    scale reuses the finiteness check's; with accumulation (the host
    transforms the gradients) the check's maxima are not reused."""
    from keras_sing.backend import torch as torch_backend

    sizes = []
    original = torch_backend.max_abs

    def spy(grads):
        out = original(grads)
        sizes.append(sum(m is not None for m in out))
        return out

    torch_backend.max_abs = spy
    try:
        run(CONFIGS["paper"], True, steps=2)
        live = sum(1 for s in SHAPES if np.prod(s) > 0)
        assert sizes == [live, 0, live, 0]
        sizes.clear()
        run(CONFIGS["accumulation"], True, steps=2)
        assert sizes and 0 not in sizes  # raw gradients checked; the step takes its own
    finally:
        torch_backend.max_abs = original


def test_torch_values_read_what_value_reads():
    """The batched step reads variables' tensors directly where
    `Variable.value` would return them unchanged, and through `value` in a
    stateless scope (the scope's values) or an autocast scope (cast)."""
    from keras.src.backend.common.variables import AutocastScope

    from keras_sing import _host

    variables = [keras.Variable(np.ones((2, 3), "float32")), keras.Variable(np.zeros(4, "float32"))]
    plain = _host._torch_values(variables)
    assert all(t is v.value for t, v in zip(plain, variables, strict=True))
    replaced = [keras.ops.full((2, 3), 7.0), keras.ops.full((4,), 5.0)]
    with keras.StatelessScope(state_mapping=list(zip(variables, replaced, strict=True))):
        scoped = _host._torch_values(variables)
    for t, r in zip(scoped, replaced, strict=True):
        np.testing.assert_array_equal(to_numpy(t), to_numpy(r))
    with AutocastScope("float16"):
        cast = _host._torch_values(variables)
    assert [keras.backend.standardize_dtype(t.dtype) for t in cast] == ["float16", "float16"]


@pytest.mark.parametrize("stack_elements", [None, 48])
def test_centralize_all_matches_centralize(stack_elements):
    """`centralize_all` stacks gradients of one shape, dtype and axes (48
    elements per stack forces chunks of two (6, 4) gradients) and gives
    what `centralize` gives each, and what the generic
    `transforms.centralize` gives; the stacks are not written through to
    the gradients, and a constant unit still centralizes to exactly 0."""
    import torch

    from keras_sing import transforms
    from keras_sing.backend import torch as torch_backend

    rng = np.random.default_rng(4)
    cases = [((6, 4), (0,))] * 5 + [((6, 4), (1,)), ((6, 4), None), ((3, 3, 2, 5), (0, 1, 2))] * 2
    cases += [((0, 3), (0,)), ((0, 3), (0,)), ((5,), ()), ((7, 1), (0,))]
    grads = [torch.as_tensor((rng.standard_normal(s) * 10 + 3).astype("float32")) for s, _ in cases]
    grads[0][:, 2] = 7.25  # a constant unit
    grads.append(grads[1].double())  # another dtype: its own stack
    cases.append(((6, 4), (0,)))
    axes = [a for _, a in cases]
    before = [g.clone() for g in grads]
    original = torch_backend.STACK_ELEMENTS
    if stack_elements:
        torch_backend.STACK_ELEMENTS = stack_elements
    try:
        batched = torch_backend.centralize_all(grads, axes)
    finally:
        torch_backend.STACK_ELEMENTS = original
    for g, b, a, out in zip(grads, before, axes, batched, strict=True):
        assert torch.equal(g, b)
        expected = torch_backend.centralize(g, a) if a else g
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
        generic = transforms.centralize(g, a) if a else g
        np.testing.assert_allclose(out.numpy(), to_numpy(generic), rtol=1e-5, atol=1e-5)
        assert out.shape == g.shape and out.dtype == g.dtype
    assert torch.all(batched[0][:, 2] == 0)


HOST_READS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy", "cpu")


def count_host_reads(monkeypatch):
    """Counts the calls that copy a torch tensor's value to the host (each
    a device synchronization on a GPU) while it is patched in."""
    import torch

    calls = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


@pytest.mark.parametrize("name", ["paper", "adamw_decay_k2", "no_lookahead_no_center", "accumulation"])
def test_one_host_read_per_step(name, monkeypatch):
    """torch's eager step reads the device once: the finiteness flag, with
    LookAhead's seed and sync flags in the same copy, before any of the
    step's kernels is launched (a read after them would make the host wait
    for the update to run). With gradient accumulation, Keras's own
    accumulation `cond` reads too, and LookAhead's flags are read in one
    copy of their own on the real steps."""
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.standard_normal(s).astype("float32")) for s in [(6, 4), (4,), (3, 3, 2, 5)]]
    opt = CONFIGS[name]()
    opt.build(variables)
    grads = [[keras.ops.convert_to_tensor(rng.standard_normal(v.shape).astype("float32")) for v in variables] for _ in range(6)]
    initial = [keras.ops.convert_to_numpy(v) for v in variables]
    per_step = []
    for g in grads:
        calls = count_host_reads(monkeypatch)
        opt.apply(g, variables)
        monkeypatch.undo()
        per_step.append(len(calls))
    if name == "accumulation":
        # micro-steps: the check and Keras's cond; real steps: + the flags
        assert per_step == [2, 3, 2, 3, 2, 3]
    else:
        assert per_step == [1] * 6
    # the step still did what it does: the weights moved, nothing skipped
    for v, before in zip(variables, initial, strict=True):
        assert np.max(np.abs(keras.ops.convert_to_numpy(v) - before)) > 1e-4
    assert int(opt.skipped_steps) == 0
    assert int(opt.iterations) == (3 if name == "accumulation" else 6)


def test_read_flags_reads_each_flag():
    from keras_sing.backend import torch as torch_backend

    flags = [keras.ops.convert_to_tensor(True), keras.ops.convert_to_tensor(False), keras.ops.equal(keras.ops.convert_to_tensor(5) % 5, 0)]
    assert torch_backend.read_flags(flags) == (True, False, True)
    assert torch_backend.read_flags([np.bool_(False)]) == (False,)


def _compiled_model(jit_compile=True, **sing_kwargs):
    """A 2-layer model with SING(AdamW, **sing_kwargs), compiled by
    `torch.compile` (or eager, `jit_compile=False`), and 6 batches of 4
    for it."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    opt = keras_sing.SING(keras.optimizers.AdamW(1e-2), **sing_kwargs)
    model.compile(opt, "mse", jit_compile=jit_compile)
    x = np.random.default_rng(0).standard_normal((24, 4)).astype("float32")
    y = np.random.default_rng(1).standard_normal((24, 2)).astype("float32")
    return model, opt, x, y


def test_torch_compile_does_not_recompile_at_every_step():
    """Under `torch.compile` (`jit_compile=True`), the step keys no map by
    a gradient's `id`: such a key becomes a guard that a new gradient
    fails, so dynamo recompiled SING's step at every step until its
    recompile limit, then ran it uncompiled. Once LookAhead's seed (step 1)
    and sync (step 5) have been compiled, later steps compile nothing."""
    from torch._dynamo.utils import counters

    model, opt, x, y = _compiled_model()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)  # steps 1-6
    graphs = counters["stats"]["unique_graphs"]
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)  # steps 7-12
    assert int(opt.iterations) == 12
    assert counters["stats"]["unique_graphs"] == graphs
    assert np.all(np.isfinite(to_numpy(model.layers[0].kernel)))


def test_torch_compile_compiles_the_whole_step():
    """Under `torch.compile`, SING's step is compiled, with one graph break
    of its own: the host read of the finiteness and LookAhead flags, ahead
    of the host's `apply`. A break inside the host's name scope (a
    `ContextVar.get`, a flag read there) made dynamo run that whole frame,
    the batched step, uncompiled."""
    from torch._dynamo.utils import counters

    model, opt, x, y = _compiled_model()
    counters.clear()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)  # seed (1) and sync (5)
    assert counters["frames"]["total"] == counters["frames"]["ok"]  # no frame left uncompiled
    ours = [reason for reason in counters["graph_break"] if "backward" not in reason]  # Keras's own break
    assert len(ours) == 1 and "tolist" in ours[0], ours
    assert int(opt.iterations) == 6


class _StateRecorder(keras.callbacks.Callback):
    """Every variable of the model and of its optimizer, before training
    (`states[0]`) and after each batch (`states[t]` after step t)."""

    def __init__(self):
        super().__init__()
        self.states = []

    def on_train_begin(self, logs=None):
        self.on_train_batch_end(None)

    def on_train_batch_end(self, batch, logs=None):
        variables = self.model.weights + self.model.optimizer.variables
        self.states.append({v.path: to_numpy(v).copy() for v in variables})


@pytest.mark.parametrize("bad_step", [1, 2, 3])  # LookAhead (k=2): seed at 1, sync at 2, neither at 3
def test_torch_compile_skip_changes_nothing_and_matches_eager(bad_step):
    """Under `torch.compile`, where the whole step is compiled, a step whose
    gradients hold a NaN leaves every variable bit-identical but
    `skipped_steps` (+1), and the steps around it give the eager path's
    values."""
    runs = {}
    for jit_compile in (False, True):
        model, _, x, y = _compiled_model(jit_compile, lookahead_steps=2)
        x[4 * (bad_step - 1)] = np.nan  # the batch of step `bad_step`
        recorder = _StateRecorder()
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
        runs[jit_compile] = recorder.states
    states = runs[True]
    before, after = states[bad_step - 1], states[bad_step]
    skipped = next(path for path in after if path.endswith("skipped_steps"))
    assert (int(before[skipped]), int(after[skipped])) == (0, 1)
    for path, value in after.items():
        if path != skipped:
            np.testing.assert_array_equal(value, before[path], err_msg=path)
    for eager_state, compiled_state in zip(runs[False], states, strict=True):
        # the same variables, in the same order (their paths are numbered apart)
        for (path, value), eager in zip(compiled_state.items(), eager_state.values(), strict=True):
            assert np.all(np.isfinite(value)), path
            np.testing.assert_allclose(value, eager, rtol=1e-5, atol=1e-6, err_msg=path)
