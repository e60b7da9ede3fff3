"""The RDE-like generator, against an independent pixel-by-pixel algorithm."""

import functools

import numpy as np
import pytest

from keras_sing.datasets import rde


def slow_labels(rectangles, image_size):
    """Depth labels for one image, by painting pixel by pixel and a memoized
    recursion over the occlusion graph (independent of the vectorized code)."""
    canvas = [[-1] * image_size for _ in range(image_size)]
    for index, (y0, x0, y1, x1) in enumerate(rectangles.tolist()):
        for y in range(y0, y1):
            for x in range(x0, x1):
                canvas[y][x] = index
    visible = {i for row in canvas for i in row if i >= 0}

    def overlaps(a, b):
        ay0, ax0, ay1, ax1 = rectangles[a]
        by0, bx0, by1, bx1 = rectangles[b]
        return max(ay0, by0) < min(ay1, by1) and max(ax0, bx0) < min(ax1, bx1)

    @functools.cache
    def depth(r):
        below = [depth(q) for q in range(r) if q in visible and overlaps(r, q)]
        return 1 + max(below, default=0)

    return np.array([[0 if i < 0 else depth(i) for i in row] for row in canvas])


@pytest.mark.parametrize("image_size, num_rectangles", [(16, 3), (24, 6), (32, 9)])
def test_labels_match_independent_algorithm(image_size, num_rectangles):
    rng = np.random.default_rng(image_size)
    rects = rde.sample_rectangles(rng, 40, image_size, num_rectangles)
    labels = rde.depth_labels(rects, image_size)
    for i in range(len(rects)):
        np.testing.assert_array_equal(labels[i], slow_labels(rects[i], image_size))


def test_hand_made_scene():
    # A at the back, B over A's right side, C over B only, D apart.
    rects = np.array([[[0, 0, 4, 4], [0, 3, 4, 7], [1, 6, 3, 8], [6, 0, 8, 2]]])
    labels = rde.depth_labels(rects, 8)
    assert labels[0, 0, 0] == 1  # A
    assert labels[0, 0, 4] == 2  # B occludes A
    assert labels[0, 1, 7] == 3  # C occludes B (and not A: no overlap)
    assert labels[0, 7, 1] == 1  # D occludes nothing
    assert labels[0, 5, 5] == 0  # background


def test_hidden_rectangle_does_not_count():
    # B covers A entirely, so A is invisible and B occludes no visible
    # rectangle: depth 1. C overlaps B: depth 2.
    rects = np.array([[[2, 2, 4, 4], [0, 0, 6, 6], [5, 5, 8, 8]]])
    labels = rde.depth_labels(rects, 8)
    assert labels[0, 3, 3] == 1
    assert labels[0, 7, 7] == 2
    assert not (labels == 3).any()


def test_generate_is_deterministic_and_sane():
    x1, y1 = rde.generate(64, image_size=32, num_rectangles=5, seed=7)
    x2, y2 = rde.generate(64, image_size=32, num_rectangles=5, seed=7)
    x3, _ = rde.generate(64, image_size=32, num_rectangles=5, seed=8)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == (64, 32, 32, 3) and x1.dtype == np.float32
    assert y1.shape == (64, 32, 32) and y1.dtype == np.int32
    assert 0.0 <= x1.min() and x1.max() <= 1.0
    assert y1.min() == 0 and y1.max() <= 5
    # class balance: background is neither absent nor everything, and the
    # first three depths are all well represented.
    freq = np.bincount(y1.ravel(), minlength=6) / y1.size
    assert 0.2 < freq[0] < 0.8
    assert all(freq[d] > 0.03 for d in (1, 2, 3))


def test_labels_from_generate_match_independent_algorithm():
    rng = np.random.default_rng(3)
    rects = rde.sample_rectangles(rng, 5, 20, 4)
    _, labels = rde.generate(5, image_size=20, num_rectangles=4, seed=3)
    for i in range(5):
        np.testing.assert_array_equal(labels[i], slow_labels(rects[i], 20))


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="min_size"):
        rde.generate(2, image_size=8, min_size=6, max_size=4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_size=0), "min_size=0"),  # not taken as "the default"
        (dict(max_size=0), "max_size=0"),
        (dict(num_rectangles=0), "num_rectangles"),
        (dict(num_rectangles=2.0), "num_rectangles"),
    ],
)
def test_bad_arguments_raise_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rde.generate(2, image_size=8, **kwargs)
