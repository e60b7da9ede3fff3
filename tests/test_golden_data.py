"""The golden data and the oracle, in the published optimizer's own layout.

`test_golden.py` checks SING against the trajectories in Keras layout
(`<case>/keras/...`). These tests tie that layout to the published one:
every Keras array is the transpose of its PyTorch twin (`<case>/torch/...`),
and the float64 oracle, run in PyTorch layout with the published rule
(centralize over dims 1.. of every tensor of ndim > 1), reproduces the
PyTorch trajectories.
"""

import numpy as np
import pytest
import reference
from test_golden import CASES


def _stepped_perm(perm):
    """The permutation for an array stacked over steps (axis 0 is the step)."""
    return [0] + [p + 1 for p in perm]


@pytest.mark.parametrize("case", CASES)
def test_every_keras_array_is_the_transposed_torch_array(golden, case):
    z, meta = golden
    for name, info in meta["variables"].items():
        perm = info["torch_to_keras_perm"]
        for array, order in [
            ("init", perm),
            ("grads", _stepped_perm(perm)),
            ("after_step", _stepped_perm(perm)),
        ]:
            torch_array = z[f"{case}/torch/{name}/{array}"]
            keras_array = z[f"{case}/keras/{name}/{array}"]
            np.testing.assert_array_equal(
                np.transpose(torch_array, order), keras_array, err_msg=f"{case} {name} {array}"
            )


@pytest.mark.parametrize("case", CASES)
def test_reference_in_torch_layout_matches_the_torch_trajectories(golden, case):
    """The oracle with the published rule, on the PyTorch arrays: one mean
    per output unit (dims 1..), none for 1-D tensors."""
    z, meta = golden
    names = list(meta["variables"])
    init = {n: z[f"{case}/torch/{n}/init"] for n in names}
    grads = {n: z[f"{case}/torch/{n}/grads"] for n in names}
    after = {n: z[f"{case}/torch/{n}/after_step"] for n in names}
    axes = {n: tuple(range(1, init[n].ndim)) if init[n].ndim > 1 else None for n in names}
    ref = reference.ReferenceSING(init, axes=axes, **meta["cases"][case])
    lrs = z[f"{case}/lr"]
    for s in range(meta["steps"]):
        w = ref.step({n: grads[n][s] for n in names}, lr=float(lrs[s]))
        for n in names:
            np.testing.assert_allclose(w[n], after[n][s], rtol=1e-9, atol=1e-12, err_msg=f"{case} {n} step {s}")
