"""The compiled step's size, not its time: a structural guard on compile cost.

Timing belongs in benchmarks (`benchmarks/first_step.py`). What a test can
check deterministically is the size of the program XLA compiles: compile
time grows with it. Two regressions found this way are pinned here:

- the finite flag's chain of scalar adds was fused into every output's
  `where` (the optimized HLO grew 9x with `on_nonfinite="skip"`);
- a `cond` per variable (the norm's fallback, LookAhead's seed and sync).
"""

import re

import keras
import numpy as np
import pytest

import keras_sing

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(
    BACKEND != "jax",
    reason="reads the HLO that jax.jit compiles; TF and torch have no such API",
)

# a ResNet-like mix: kernels, biases, norm scales
SHAPES = [(3, 3, 8, 16), (16,), (16,), (16,), (1, 1, 16, 32), (32,), (32,)] * 6


def optimized_hlo(on_nonfinite, lookahead=True):
    import jax

    rng = np.random.default_rng(0)
    variables = [
        keras.Variable(rng.standard_normal(s).astype("float32"), name=f"v{i}")
        for i, s in enumerate(SHAPES)
    ]
    axes = {f"^v{i}$": (0, 1, 2) if len(s) == 4 else None for i, s in enumerate(SHAPES)}
    opt = keras_sing.SING(
        keras.optimizers.AdamW(1e-3, weight_decay=1e-2),
        on_nonfinite=on_nonfinite,
        lookahead=lookahead,
        centralize_axes=axes,
    )
    opt.build(variables)
    grads = [rng.standard_normal(s).astype("float32") for s in SHAPES]

    def step(train, optimizer_values, g):
        return opt.stateless_apply(optimizer_values, g, train)

    compiled = (
        jax.jit(step)
        .lower([v.value for v in variables], [v.value for v in opt.variables], grads)
        .compile()
    )
    return compiled.as_text()


def test_skip_check_does_not_grow_the_program():
    """The skip adds one check and one `cond` around the step: the program
    may grow by a fraction, not by a factor (it grew 9x when the flag's
    adds were fused into a select on every output)."""
    ignore = optimized_hlo("ignore").count("\n")
    skip = optimized_hlo("skip").count("\n")
    assert skip < 1.6 * ignore, (skip, ignore)


def test_no_cond_per_variable():
    """LookAhead's seed and sync are one `cond` each for all variables, and
    the norm has no `cond`: the number of conditionals does not grow with
    the number of variables (42 here)."""
    conditionals = len(re.findall(r"\bconditional\(", optimized_hlo("skip")))
    assert conditionals <= 4, conditionals
