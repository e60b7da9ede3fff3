"""Each transform alone, against tests/reference.py and inline cases."""

import keras
import numpy as np
import pytest
import reference
from conftest import RTOL
from conftest import assert_close
from conftest import to_numpy

from keras_sing import transforms

SHAPES = [(), (1,), (7,), (5, 3), (1, 6), (6, 1), (3, 3, 4, 8), (2, 1, 3)]


def keras_axes(shape):
    return reference.keras_fan_in_axes(shape) or None


def test_centralize_inline():
    # Dense kernel (in=2, out=2): one mean per output column.
    g = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    assert_close(transforms.centralize(g, (0,)), [[-1.0, -1.0], [1.0, 1.0]])


def test_centralize_without_axes_is_identity():
    g = np.arange(6.0, dtype="float32").reshape(2, 3)
    assert_close(transforms.centralize(g, None), g)
    assert_close(transforms.centralize(g, ()), g)


def test_normalize_inline():
    assert_close(transforms.normalize(np.array([3.0, 4.0], "float32"), 0.0), [0.6, 0.8])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_standardize_matches_oracle(shape, dtype):
    g = np.random.standard_normal(shape) * 3.0
    expected = reference.standardize(g, reference.keras_fan_in_axes(shape))
    x = keras.ops.convert_to_tensor(g, dtype=dtype)
    out = transforms.standardize(x, keras_axes(shape), 1e-8)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    assert_close(keras.ops.cast(out, "float32"), expected, rtol=RTOL[dtype])


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e-6, 1.0, 1e6, 1e20, 1e30])
def test_standardize_extreme_scales_match_oracle(scale):
    """float32 gradients from 1e-30 to 1e30: finite, and equal to the
    formula g / ||g|| computed in float64 (no overflow of the sum of
    squares at 1e30, no underflow at 1e-30). Epsilon is 0: at 1e-20 and
    below, 1e-8 would swamp the norm, and a norm that underflowed to 0
    would pass unseen."""
    g = (np.random.standard_normal((16, 8)) * scale).astype("float32")
    expected = reference.standardize(g.astype(np.float64), (0,), eps=0.0)
    out = to_numpy(transforms.standardize(g, (0,), 0.0))
    assert np.all(np.isfinite(out))
    assert_close(out, expected, rtol=1e-5)


def test_standardize_scale_invariance():
    """c * G gives the same direction for c in 1e-6..1e6, up to the
    epsilon term: |rel. change| <= eps / ||c G|| (1e-5 here at c = 1e-6)."""
    g = np.random.standard_normal((32, 32)) * 1e3 / 32  # ||g|| ~ 1e3
    base = to_numpy(transforms.standardize(g.astype("float32"), (0,), 1e-8))
    for c in [1e-6, 1e-3, 1e3, 1e6]:
        out = transforms.standardize((g * c).astype("float32"), (0,), 1e-8)
        assert_close(out, base, rtol=3e-5)


def test_standardize_zero_gradient_is_zero():
    for shape in [(), (4,), (4, 3)]:
        out = to_numpy(transforms.standardize(np.zeros(shape, "float32"), keras_axes(shape), 1e-8))
        assert np.all(out == 0.0)


def test_standardize_constant_gradient_centralizes_to_zero():
    out = to_numpy(transforms.standardize(np.full((5, 3), 7.0, "float32"), (0,), 1e-8))
    assert np.all(out == 0.0)


def test_standardize_empty_tensor():
    out = transforms.standardize(np.zeros((0, 3), "float32"), (0,), 1e-8)
    assert tuple(out.shape) == (0, 3)


def test_float16_norm_is_computed_in_float32():
    """A float16 gradient's norm is computed and returned in float32: to
    float32's precision (float16's would be ~1e-3 off), and where the sum
    of squares overflows float16 (max 65504)."""
    g = (np.random.default_rng(0).standard_normal((8, 8)) * 300.0).astype(
        "float16"
    )
    out, norm = transforms.standardize_with_norm(g, None, 1e-8)
    assert keras.backend.standardize_dtype(norm.dtype) == "float32"
    np.testing.assert_allclose(
        to_numpy(norm), np.linalg.norm(g.astype(np.float64)), rtol=1e-6
    )
    out = to_numpy(keras.ops.cast(out, "float32"))
    assert np.all(np.isfinite(out))
    assert_close(out, reference.standardize(g.astype(np.float64), ()), rtol=1e-2)


@pytest.mark.parametrize("beta", [1.0, 50.0, 1000.0])
def test_softplus_calibrate_matches_oracle(beta):
    # stable at any sign and scale: no overflow of exp(beta d) at 1e4, and
    # relative precision down to float32's smallest normal number
    d = np.concatenate(
        [-np.logspace(2, -6, 20), np.zeros(3), np.logspace(-6, 4, 60)]
    )
    np.testing.assert_allclose(
        to_numpy(transforms.softplus_calibrate(d.astype("float32"), beta)),
        reference.softplus(d, beta),
        rtol=1e-5,
        atol=np.finfo(np.float32).tiny,
    )


def test_softplus_floor():
    # softplus_50(0) = ln 2 / 50
    out = to_numpy(transforms.softplus_calibrate(np.zeros(2, "float32"), 50.0))
    np.testing.assert_allclose(out, np.log(2) / 50, rtol=1e-6)


def test_lookahead_merge_inline():
    fast = np.array([4.0, -2.0], "float32")
    slow = np.array([0.0, 2.0], "float32")
    assert_close(transforms.lookahead_merge(fast, slow, 0.5), [2.0, 0.0])
    assert_close(transforms.lookahead_merge(fast, slow, 1.0), fast)
    assert_close(transforms.lookahead_merge(fast, slow, 0.25), [1.0, 1.0])
