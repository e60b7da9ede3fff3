"""The compiled step's size, not its time: a structural guard on compile cost.

Timing belongs in benchmarks (`benchmarks/first_step.py`). What a test can
check deterministically is the size of the program XLA compiles: compile
time grows with it. Two regressions found this way are pinned here:

- the finite flag's chain of scalar adds was fused into every output's
  `where` (the optimized HLO grew 9x with `on_nonfinite="skip"`);
- a `cond` per variable (the norm's fallback, LookAhead's seed and sync).
"""

import functools
import re

import keras
import numpy as np
import pytest

import keras_sing

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(
    BACKEND == "torch",
    reason="reads the HLO that XLA compiles (jax.jit, tf.function(jit_compile=True)); torch has no XLA",
)

# a ResNet-like mix: kernels, biases, norm scales
SHAPES = [(3, 3, 8, 16), (16,), (16,), (16,), (1, 1, 16, 32), (32,), (32,)] * 6


@functools.cache  # a text, shared by the tests below
def optimized_hlo(on_nonfinite, lookahead=True):
    """The optimized HLO of one compiled step on `SHAPES`: `jax.jit` of
    `stateless_apply` on JAX, `tf.function(jit_compile=True)` of `apply` on
    TensorFlow."""
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
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def apply(g):
            opt.apply(g, variables)

        grads = [tf.constant(g) for g in grads]
        return apply.experimental_get_compiler_ir(grads)(stage="optimized_hlo")

    import jax

    def step(train, optimizer_values, g):
        return opt.stateless_apply(optimizer_values, g, train)

    compiled = (
        jax.jit(step)
        .lower([v.value for v in variables], [v.value for v in opt.variables], grads)
        .compile()
    )
    return compiled.as_text()


@pytest.mark.parametrize("lookahead", [True, False], ids=["lookahead", "no_lookahead"])
def test_skip_check_does_not_grow_the_program(lookahead):
    """The skip adds one check and one `cond` around the step: the program
    may grow by a fraction, not by a factor. It grew 9x on JAX when the
    flag's adds were fused into a select on every output, and 5x on
    TensorFlow without LookAhead, where XLA turned the `cond` (its branches
    all elementwise) into such selects."""
    ignore = optimized_hlo("ignore", lookahead).count("\n")
    skip = optimized_hlo("skip", lookahead).count("\n")
    assert skip < 1.6 * ignore, (skip, ignore)


@pytest.mark.parametrize(
    "on_nonfinite, lookahead, expected",
    [("skip", True, 3), ("skip", False, 1), ("ignore", True, 2), ("ignore", False, 0)],
)
def test_no_cond_per_variable(on_nonfinite, lookahead, expected):
    """One `cond` for the skip, and LookAhead's seed and sync one each for
    all variables; the norm has none: the number of conditionals does not
    grow with the number of variables (42 here), and the skip's is kept
    (not turned into a select on every output)."""
    conditionals = len(re.findall(r"\bconditional\(", optimized_hlo(on_nonfinite, lookahead)))
    assert conditionals == expected, conditionals
