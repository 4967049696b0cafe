"""The one error type for user mistakes; the CLI prints it as one line and exits 2."""

import re


class PbdError(Exception):
    """A problem with the user's input (file, option, data), not a bug in pbd-deploy."""


def reason(exc: BaseException, limit: int = 200) -> str:
    """Why a library call (torch, safetensors, onnx, PyAV) failed, as one short line.

    Its first line without terminal colours; for torch's weights-only loader, which explains
    itself in a dozen lines, the refused class and what to do instead.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (
            f"it holds Python objects{what} that torch's safe weights-only loader refuses; "
            "save a plain state dict of tensors (or safetensors) instead"
        )
    first = text.splitlines()[0].strip() if text else type(exc).__name__
    return first[:limit]
