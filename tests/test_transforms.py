"""Each transform alone, against tests/reference.py and inline cases."""

import contextlib

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


def _float64_scope():
    """A scope where the backend computes in float64 (JAX needs x64 on)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


def test_unit_mean_keeps_float64():
    """A float64 gradient is centralized to float64 precision (Keras's
    `ops.mean` averages float64 in float32 on JAX and torch)."""
    g = np.random.default_rng(5).normal(size=(400, 3))
    with _float64_scope():
        mean = transforms.unit_mean(
            keras.ops.convert_to_tensor(g, "float64"), (0,)
        )
        assert keras.backend.standardize_dtype(mean.dtype) == "float64"
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(mean), g.mean(0, keepdims=True),
            rtol=0, atol=1e-13,  # float32 averaging errs by ~1e-9
        )


@pytest.mark.parametrize("form", ["default", "bounded"])
@pytest.mark.parametrize(
    "dtype, exponents",
    [
        ("float32", [-120, -100, -64, -60, -30, 0, 30, 60, 64, 100, 110]),
        ("float64", [-1000, -700, -512, -300, 0, 300, 512, 700, 1000]),
    ],
)
def test_l2_norm_matches_oracle_at_every_scale(form, dtype, exponents):
    """`l2_norm`, by default (the lanes up to `LANE_ELEMENTS` elements, the
    bounded form above: n = 6000) and bounded, equals sqrt(sum(x^2)) computed in float64 on
    x / 2^e (exact) and scaled back, for x = y 2^e across the dtype's
    range: past where sum(x^2) overflows or underflows (float32 beyond
    2^+-64, float64 beyond 2^+-512), up to where the norm itself would.
    float64 has its own lanes; float32's would overflow there."""
    rng = np.random.default_rng(0)
    with _float64_scope():
        for e in exponents:
            for n in (1, 7, 4096, 6000):
                x = np.ldexp(rng.standard_normal(n), e).astype(dtype)
                expected = np.linalg.norm(np.ldexp(x.astype(np.float64), -e))
                tensor = keras.ops.convert_to_tensor(x)
                bound = tensor if form == "bounded" else None
                norm = transforms.l2_norm(tensor, bound=bound)
                assert keras.backend.standardize_dtype(norm.dtype) == dtype
                got = np.ldexp(np.float64(to_numpy(norm)), -e)
                tolerance = 1e-6 if dtype == "float32" else 1e-14
                np.testing.assert_allclose(got, expected, rtol=tolerance)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_norm_lanes_cannot_overflow_and_keep_the_smallest_numbers(dtype):
    """The lane constants keep their promises: the scaled-down lane of the
    largest finite number, squared and summed 2^47 times, is finite; the
    scaled-up lane of the smallest subnormal, squared, is a normal number;
    the plain window [2^lo, 2^hi) holds the squares it is chosen for.
    float32's are the documented 2^-88, 2^86, 2^-64 and 2^120."""
    lanes, low, high, scales = transforms._norm_lanes(dtype)
    info = np.finfo(dtype)
    c_lo, c_hi = np.float64(lanes[1, 0]), np.float64(lanes[2, 0])
    with np.errstate(over="raise", under="ignore"):
        big = np.asarray(info.max * lanes[1, 0], dtype)
        assert np.isfinite(np.asarray(big * big * 2.0**47, dtype))
        tiny = np.asarray(info.smallest_subnormal * lanes[2, 0], dtype)
        assert np.asarray(tiny * tiny, dtype) >= info.smallest_normal
        # the up lane, chosen for sums below 2^lo, sums below 2^lo c_hi^2
        up = np.asarray(np.asarray(low * lanes[2, 0], dtype) * lanes[2, 0], dtype)
        assert np.isfinite(np.asarray(up * 2.0**8, dtype))
    np.testing.assert_array_equal(scales * lanes[:, 0], np.ones(3, dtype))
    assert low.dtype == high.dtype == lanes.dtype == np.dtype(dtype)
    if dtype == "float32":
        assert (c_lo, c_hi, float(low), float(high)) == (
            2.0**-88, 2.0**86, 2.0**-64, 2.0**120
        )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_l2_norm_of_low_precision_is_returned_in_its_dtype(dtype):
    """`l2_norm` of a float16/bfloat16 tensor is returned in its dtype, and
    does not overflow where the sum of squares (640000) would in float16
    (that it is taken in float32 is checked to float32's precision by
    `test_low_precision_norm_is_computed_in_float32`)."""
    x = keras.ops.convert_to_tensor(np.full((64,), 100.0, "float32"), dtype)
    for bound in (None, x):
        norm = transforms.l2_norm(x, bound=bound)
        assert keras.backend.standardize_dtype(norm.dtype) == dtype
        np.testing.assert_allclose(float(to_numpy(keras.ops.cast(norm, "float32"))), 800.0, rtol=1e-2)


@pytest.mark.parametrize("shape", [(16, 8), (96, 64)])
@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_statistics_take_lanes_up_to_lane_elements(shape, scale, monkeypatch):
    """SING's statistics, and `l2_norm` by default, take the three lanes
    for a tensor of up to `LANE_ELEMENTS` elements and the bounded form
    above, and both give the float64 oracle's norm and finiteness, at
    1e-30 and 1e30 too."""
    lanes = []
    original = transforms._lane_l2_norm
    monkeypatch.setattr(transforms, "_lane_l2_norm", lambda x: lanes.append(1) or original(x))
    g = (np.random.default_rng(1).standard_normal(shape) * scale).astype("float32")
    mean, norm, finite = transforms.standardization_statistics(g, (0,))
    assert bool(lanes) is (g.size <= transforms.LANE_ELEMENTS)
    centered = g.astype(np.float64) / scale
    centered -= centered.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(float(to_numpy(norm)), np.linalg.norm(centered) * scale, rtol=1e-6)
    assert bool(to_numpy(finite))
    lanes.clear()
    plain = transforms.l2_norm(g)  # the default takes the same form
    assert bool(lanes) is (g.size <= transforms.LANE_ELEMENTS)
    np.testing.assert_allclose(float(to_numpy(plain)), np.linalg.norm(g.astype(np.float64) / scale) * scale, rtol=1e-6)


def test_a_shape_not_known_when_traced_takes_the_bounded_form():
    """The lanes' choice reads the static shape: a dimension unknown when
    traced counts as large (the bounded form is exact at any size)."""
    limit = transforms.LANE_ELEMENTS
    assert transforms._takes_lanes(keras.KerasTensor((limit,)))
    assert not transforms._takes_lanes(keras.KerasTensor((limit + 1,)))
    assert not transforms._takes_lanes(keras.KerasTensor((None, 2)))
    assert transforms._takes_lanes(keras.KerasTensor(()))


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


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_norm_is_computed_in_float32(dtype):
    """A float16/bfloat16 gradient's norm is computed and returned in
    float32: to float32's precision (float16's would be ~1e-3 off,
    bfloat16's ~1e-2), and where the sum of squares overflows float16
    (max 65504)."""
    values = np.random.default_rng(0).standard_normal((8, 8)) * 300.0
    g = keras.ops.convert_to_tensor(values.astype("float32"), dtype)
    exact = to_numpy(keras.ops.cast(g, "float32")).astype(np.float64)
    out, norm = transforms.standardize_with_norm(g, None, 1e-8)
    assert keras.backend.standardize_dtype(norm.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(norm), np.linalg.norm(exact), rtol=1e-6)
    out = to_numpy(keras.ops.cast(out, "float32"))
    assert np.all(np.isfinite(out))
    assert_close(out, reference.standardize(exact, ()), rtol=1e-2)


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
