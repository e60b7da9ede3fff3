"""Shared fixtures: the backend banner, seeding, golden data, tolerances.

The backend is a CI axis, not a pytest parameter: run the suite once per
`KERAS_BACKEND` (tensorflow, jax, torch).
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# Import torch before TensorFlow where both are present (Keras's own conftest
# does this to avoid a segfault at import).
try:  # pragma: no cover - depends on the environment
    import torch  # noqa: F401
except ImportError:  # pragma: no cover
    pass

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))

DATA = pathlib.Path(__file__).parent / "data"
BACKEND = keras.backend.backend()

# float32 against the float64 oracle; loosened only with a comment.
RTOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 2e-2}


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend: {BACKEND}"


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.utils.clear_session()
    np.random.seed(0)
    yield


@pytest.fixture(scope="session")
def golden():
    """The published optimizer's trajectories (see tests/data/README.md)."""
    z = np.load(DATA / "sing_reference.npz")
    meta = json.loads(str(z["meta_json"]))
    return z, meta


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def assert_close(actual, expected, rtol=1e-5, scale_atol=True):
    """allclose with rtol, and atol = rtol * max|expected| (float32 values
    that cancel to ~0 cannot keep a relative error below 1e-5)."""
    actual = to_numpy(actual).astype(np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    atol = rtol * float(np.max(np.abs(expected))) if scale_atol else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def random_variables(shapes):
    """`keras.Variable`s `v0, v1, ...` of `shapes`, standard normal (seed 0)."""
    rng = np.random.default_rng(0)
    return [
        keras.Variable(rng.standard_normal(s).astype("float32"), name=f"v{i}")
        for i, s in enumerate(shapes)
    ]


def random_gradients(shapes, step):
    """Standard normal float32 gradients of `shapes` for step `step`."""
    rng = np.random.default_rng(step + 1)
    return [rng.standard_normal(s).astype("float32") for s in shapes]
