import numpy as np
import pytest

from pbd_deploy.core.features import load_features
from pbd_deploy.errors import PbdError


def _save(tmp_path, array, name="feats.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


def test_loads_float32(tmp_path):
    data = np.random.default_rng(0).normal(size=(30, 8))  # (T, C) float64
    out = load_features(_save(tmp_path, data), feature_dim=8)
    assert out.dtype == np.float32 and out.shape == (30, 8)
    np.testing.assert_allclose(out, data, rtol=1e-6)
    assert load_features(_save(tmp_path, np.ones((3, 5), np.int16))).dtype == np.float32


def test_missing_file(tmp_path):
    with pytest.raises(PbdError, match="feature file not found: .*nope.npy"):
        load_features(tmp_path / "nope.npy")


def test_random_bytes_are_not_npy(tmp_path):
    path = tmp_path / "junk.npy"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(PbdError, match="is not a .npy file"):
        load_features(path)


def test_truncated_npy(tmp_path):
    path = _save(tmp_path, np.ones((50, 4), np.float32))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(PbdError, match="cannot load features .*feats.npy"):
        load_features(path)


def test_pickled_objects_are_refused(tmp_path):
    path = _save(tmp_path, np.array([{"a": 1}], dtype=object))
    with pytest.raises(PbdError, match="Python objects"):
        load_features(path)


@pytest.mark.parametrize(
    "array, dim, expected",
    [
        (np.ones(10), None, r"shape \(10,\); expected \(T, C\)"),
        (np.ones((2, 3, 4)), None, r"shape \(2, 3, 4\)"),
        (np.ones((0, 4)), None, r"shape \(0, 4\)"),
        (np.ones((5, 4)), 8, "have 4 channels, expected 8"),
        (np.array([["a", "b"]]), None, "non-real dtype"),
        (np.array([[1.0, np.nan], [0.0, np.inf]]), None, "2 NaN/inf values .first at time step 0"),
        (np.array([[0.0, 0.0], [1e300, 0.0]]), None, "1 NaN/inf values .first at time step 1"),
    ],
)
def test_bad_contents(tmp_path, array, dim, expected):
    with pytest.raises(PbdError, match=expected) as info:
        load_features(_save(tmp_path, array), feature_dim=dim)
    assert "\n" not in str(info.value)
