"""FP16 variant: an ONNX rewrite (onnxconverter-common) with fp32 inputs and outputs.

TensorRT 11 builds strongly typed networks only, so reduced precision must be in the file.
Ops that overflow in fp16 stay in fp32: the rewrite is checked on real or random inputs
in ONNX Runtime and, when outputs are not finite or drift too far, redone with
LayerNormalization and Softmax blocked (the usual culprits: variance sums and exp).
A model saved with external data (over 2 GB) is read with it and written the same way.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx

from pbd_deploy.errors import PbdError

log = logging.getLogger(__name__)

# Kept in fp32 on the second try, when the plain rewrite fails the check.
SENSITIVE_OPS = ("LayerNormalization", "Softmax")


def _rewrite(model: onnx.ModelProto, block: tuple[str, ...]) -> onnx.ModelProto:
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "-inf truncated to -10000": the attention mask, fine
        return float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(block),
        )


def _outputs(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    from pbd_deploy.export.onnx import needs_external_data, save_onnx

    options = ort.SessionOptions()
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="pbd-fp16-") as work:
        if needs_external_data(model):  # over 2 GB: ORT reads it from a file + external data
            source = str(Path(work) / "model.onnx")
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # saving with external data moves the tensors out of the proto
            save_onnx(copy, source, True)
        else:
            source = model.SerializeToString()
        session = ort.InferenceSession(source, options, ["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]  # a masked model's "valid" second
        items = [x if isinstance(x, tuple) else (x,) for x in inputs]
        return [session.run(None, dict(zip(names, item))) for item in items]


def _drift(reference, candidate) -> tuple[float, float, bool]:
    """Max abs difference of scores and segments, and whether every output is finite."""
    finite = all(np.isfinite(o).all() for outs in candidate for o in outs)
    diffs = [
        max(float(np.abs(r[i] - c[i]).max()) for r, c in zip(reference, candidate)) for i in (0, 1)
    ]
    return diffs[0], diffs[1], finite


def convert_fp16(
    src: str | Path, dst: str | Path, inputs: list[np.ndarray], score_tolerance: float = 0.02
) -> dict:
    """Write the fp16 rewrite of `src` to `dst` and return how it was checked.

    Args:
        src: the fp32 ONNX file.
        dst: the fp16 file to write.
        inputs: model inputs (B, ...) float32 to check the rewrite on.
        score_tolerance: largest max-abs score change accepted before blocking SENSITIVE_OPS.

    Returns:
        {"fp32_ops": ops kept in fp32, "max_abs_diff_scores", "max_abs_diff_segments"}.
    """
    from pbd_deploy.export.onnx import save_onnx

    model = onnx.load(str(src))  # with its external data, if any
    reference = _outputs(model, inputs)
    for block in ((), SENSITIVE_OPS):
        half = _rewrite(model, block)
        try:
            ds, dg, finite = _drift(reference, _outputs(half, inputs))
        except Exception as exc:  # ORT without fp16 kernels for this CPU: cannot check here
            half = _rewrite(model, SENSITIVE_OPS)  # the conservative rewrite, unchecked
            save_onnx(half, dst)
            reason = " ".join(str(exc).split())[:200]
            log.warning("fp16 model not checked: onnxruntime cannot run it here (%s)", reason)
            return {"fp32_ops": list(SENSITIVE_OPS), "checked": False, "reason": reason}
        if finite and ds <= score_tolerance:
            break
        log.info("fp16 rewrite blocking %s: finite=%s score drift %.3g", block, finite, ds)
    else:
        raise PbdError(
            f"the fp16 rewrite stays inaccurate even with {SENSITIVE_OPS} in fp32 (score drift "
            f"{ds:.3g}, finite={finite}); ship the fp32 or int8 model instead"
        )
    save_onnx(half, dst)
    return {
        "fp32_ops": list(block),
        "checked": True,
        "max_abs_diff_scores": ds,
        "max_abs_diff_segments": dg,
    }
