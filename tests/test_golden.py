"""SING against the published optimizer's trajectories (tests/data)."""

import keras
import numpy as np
import pytest
import reference
from conftest import BACKEND
from conftest import assert_close
from conftest import to_numpy

import keras_sing

CASES = [
    "paper_defaults",
    "high_lr_weight_decay",
    "no_softplus",
    "no_lookahead",
    "no_centralize",
    "betas_lookahead_k3",
]


def make_sing(hp, learning_rate=None):
    """SING configured like a golden case, the way the issue states it."""
    host = keras.optimizers.AdamW(
        learning_rate=hp["lr"] if learning_rate is None else learning_rate,
        weight_decay=hp["weight_decay"],
        beta_1=hp["betas"][0],
        beta_2=hp["betas"][1],
    )
    return keras_sing.SING(
        host,
        epsilon=hp["eps"],
        softplus=hp["softplus"],
        softplus_beta=float(hp["beta_softplus"]),
        centralize=hp["grad_central"],
        normalize=hp["grad_norm"],
        lookahead=hp["lookahead_active"],
        lookahead_steps=hp["la_mergetime"],
        lookahead_alpha=hp["la_alpha"],
    )


def case_arrays(z, meta, case):
    names = list(meta["variables"])
    init = {n: z[f"{case}/keras/{n}/init"] for n in names}
    grads = {n: z[f"{case}/keras/{n}/grads"] for n in names}
    after = {n: z[f"{case}/keras/{n}/after_step"] for n in names}
    return names, init, grads, after, z[f"{case}/lr"]


def lr_schedule(meta, lrs):
    """The golden learning rates as a Keras schedule of the host's step."""
    # lrs[s] is in force at 0-based step s; the schedule sees the host's
    # 0-based step counter and keeps values[0] while step <= boundary.
    first_changed = int(np.flatnonzero(lrs != lrs[0])[0])
    assert first_changed == meta["lr_change_at_step"] - 1
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [first_changed - 1], [float(lrs[0]), float(lrs[first_changed])]
    )


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_golden(golden, case):
    """The NumPy oracle reproduces the published optimizer (float64)."""
    z, meta = golden
    names, init, grads, after, lrs = case_arrays(z, meta, case)
    ref = reference.ReferenceSING(init, **meta["cases"][case])
    for s in range(meta["steps"]):
        w = ref.step({n: grads[n][s] for n in names}, lr=float(lrs[s]))
        for n in names:
            np.testing.assert_allclose(w[n], after[n][s], rtol=1e-9, atol=1e-12)


def test_golden_keras_layout_is_transposed_torch_layout(golden):
    z, meta = golden
    for n, info in meta["variables"].items():
        torch_init = z[f"paper_defaults/torch/{n}/init"]
        keras_init = z[f"paper_defaults/keras/{n}/init"]
        perm = info["torch_to_keras_perm"]
        np.testing.assert_array_equal(np.transpose(torch_init, perm), keras_init)


@pytest.mark.parametrize("case", CASES)
def test_apply_matches_golden(golden, case):
    """Eager `apply`, learning rate set between steps as a user would."""
    z, meta = golden
    names, init, grads, after, lrs = case_arrays(z, meta, case)
    variables = [keras.Variable(init[n].astype("float32"), name=n) for n in names]
    opt = make_sing(meta["cases"][case])
    for s in range(meta["steps"]):
        opt.learning_rate = float(lrs[s])
        opt.apply([grads[n][s].astype("float32") for n in names], variables)
        for n, v in zip(names, variables, strict=True):
            assert_close(v, after[n][s], rtol=1e-5)


class GradientProbe(keras.layers.Layer):
    """Holds the golden variables; its output's gradient w.r.t. each
    variable is exactly the input fed for it (loss = sum(W * x))."""

    def __init__(self, init, **kwargs):
        super().__init__(**kwargs)
        self.names = list(init)
        for n, value in init.items():
            setattr(
                self,
                n,
                self.add_weight(
                    shape=value.shape,
                    initializer=keras.initializers.Constant(value),
                    name=n,
                ),
            )

    def call(self, inputs):
        total = 0.0
        for n in self.names:
            w = getattr(self, n)
            x = inputs[n]
            axes = tuple(range(1, len(x.shape)))
            product = w * x
            total = total + (keras.ops.sum(product, axis=axes) if axes else product)
        return keras.ops.expand_dims(total, -1)


def probe_model(init):
    inputs = {
        n: keras.Input(shape=v.shape, batch_size=1, name=n) for n, v in init.items()
    }
    return keras.Model(inputs, GradientProbe(init, name="probe")(inputs))


def _identity_loss(y_true, y_pred):
    return keras.ops.mean(y_pred) + 0.0 * keras.ops.mean(y_true)


def _fit_params():
    params = []
    for case in CASES:
        params.append(pytest.param(case, "auto", id=f"{case}-auto"))
        # torch.compile costs 30-75 s per model on a CI core, so on torch one
        # case is compiled (the eager torch path runs every case above).
        if BACKEND != "torch" or case == "paper_defaults":
            params.append(pytest.param(case, True, id=f"{case}-jit"))
    return params


@pytest.mark.parametrize("case, jit_compile", _fit_params())
def test_fit_matches_golden(golden, case, jit_compile):
    """`fit` (compiled: XLA on TF/JAX, torch.compile on torch), with the
    learning rate halved by a schedule evaluated at the host's step."""
    z, meta = golden
    names, init, grads, after, lrs = case_arrays(z, meta, case)
    init32 = {n: v.astype("float32") for n, v in init.items()}
    model = probe_model(init32)
    opt = make_sing(meta["cases"][case], learning_rate=lr_schedule(meta, lrs))
    model.compile(optimizer=opt, loss=_identity_loss, jit_compile=jit_compile)
    x = {n: grads[n].astype("float32") for n in names}
    y = np.zeros((meta["steps"], 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
    assert int(to_numpy(opt.iterations)) == meta["steps"]
    probe = model.get_layer("probe")
    for n in names:
        assert_close(getattr(probe, n), after[n][-1], rtol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit needs JAX; Keras TF/torch have no jitted stateless_apply")
@pytest.mark.parametrize("case", CASES)
def test_stateless_apply_jit_matches_golden(golden, case):
    import jax

    z, meta = golden
    names, init, grads, after, lrs = case_arrays(z, meta, case)
    variables = [keras.Variable(init[n].astype("float32"), name=n) for n in names]
    opt = make_sing(meta["cases"][case], learning_rate=lr_schedule(meta, lrs))
    opt.build(variables)

    @jax.jit
    def step(opt_vars, grads_, train_vars):
        return opt.stateless_apply(opt_vars, grads_, train_vars)

    train_vars = [v.value for v in variables]
    opt_vars = [v.value for v in opt.variables]
    for s in range(meta["steps"]):
        g = [jax.numpy.asarray(grads[n][s], dtype="float32") for n in names]
        train_vars, opt_vars = step(opt_vars, g, train_vars)
        for n, value in zip(names, train_vars, strict=True):
            assert_close(value, after[n][s], rtol=1e-5)
    assert step._cache_size() == 1  # the learning-rate change did not retrace
