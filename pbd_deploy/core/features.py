"""Load precomputed per-video feature arrays (.npy) with checks a user can act on."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pbd_deploy.errors import PbdError

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def load_features(path: str | Path, feature_dim: int | None = None) -> np.ndarray:
    """Load one video's features from a .npy file.

    Args:
        path: the .npy file holding a (T, C) numeric array.
        feature_dim: expected C; None accepts any.

    Returns:
        (T, C) float32.

    Raises:
        PbdError: missing or unreadable file, an object (pickled) array, a shape other
            than (T, C) with T > 0, the wrong C, or NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise PbdError(f"feature file not found: {path} (check the path or extract features)")
    _check_magic(path)
    try:
        # allow_pickle=False: a feature file must never be able to run code on load.
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as exc:
        reason = _one_line(exc)
        if "allow_pickle" in reason:
            reason = "it holds Python objects, not a numeric array"
        raise PbdError(f"cannot load features {path}: {reason} (re-extract the features)") from None
    if isinstance(array, np.lib.npyio.NpzFile):
        array.close()
        raise PbdError(f"{path} is an .npz archive; save one (T, C) array per video with np.save")
    return _checked(array, path, feature_dim)


def _check_magic(path: Path) -> None:
    # Without this, np.load treats any non-.npy bytes as a pickle and its error message
    # suggests loading them unsafely.
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise PbdError(f"cannot read features {path}: {_one_line(exc)}") from None
    if head != _NPY_MAGIC and not head.startswith(_ZIP_MAGIC):
        raise PbdError(f"{path} is not a .npy file (save features with np.save)")


def _checked(array: np.ndarray, path: Path, feature_dim: int | None) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] == 0:
        raise PbdError(
            f"features {path} have shape {array.shape}; expected (T, C) with T > 0 "
            "(re-extract the features)"
        )
    if feature_dim is not None and array.shape[1] != feature_dim:
        raise PbdError(
            f"features {path} have {array.shape[1]} channels, expected {feature_dim} "
            "(features from another backbone? re-extract them or fix feature_dim)"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise PbdError(f"features {path} have non-real dtype {array.dtype} (re-extract them)")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf below
        out = array.astype(np.float32, copy=False)  # (T, C) float32
    bad = ~np.isfinite(out)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise PbdError(
            f"features {path} contain {int(bad.sum())} NaN/inf values "
            f"(first at time step {int(rows[0])}); re-extract the features"
        )
    return out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
