"""Import VideoMAE backbone weights from OpenTAD / AdaTAD (mmaction names) or HuggingFace.

Only the backbone is mapped: OpenTAD's ActionFormer head (`projection`, `neck`, `rpn_head`)
is structured differently from ours, so it is re-initialised and listed as skipped;
fine-tune it with `pbd-deploy train --init MODEL_DIR`. Loading never unpickles code:
safetensors, or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from pbd_deploy.core.atomic import prepare_output
from pbd_deploy.errors import PbdError, reason
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import add_history, load_state, save_model
from pbd_deploy.models.registry import model_config

# Source key groups we knowingly leave out (head, classifier, adapters, fixed tables).
_SKIPPED = re.compile(
    r"(^|\.)(projection|neck|rpn_head|roi_head|classifier|head|fc_norm|adapter|pos_embed"
    r"|position_embeddings|decoder|mask_token|encoder_to_decoder)(\.|$)"
)

_MMACTION_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.qkv": "attn.qkv",
    "attn.proj": "attn.proj",
    "mlp.layers.0.0": "mlp.fc1",
    "mlp.layers.1": "mlp.fc2",
}
_HF_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


@dataclass
class Conversion:
    """What `convert_checkpoint` did: the source format and the keys it skipped."""

    source_format: str
    mapped: int
    skipped: list[str] = field(default_factory=list)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .pth / .pt / .bin file, unwrapping 'state_dict' or 'model'."""
    path = Path(path)
    if not path.is_file():
        raise PbdError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (
        SafetensorError,
        pickle.UnpicklingError,
        RuntimeError,
        ValueError,
        EOFError,
        OSError,
    ) as exc:
        raise PbdError(f"cannot read checkpoint {path}: {reason(exc)}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PbdError(f"{path} holds no tensor state dict")
    return state


def map_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Conversion]:
    """Rename source keys to our backbone's (`backbone.…`); returns unknown keys as-is."""
    if any(".encoder.layer." in k or k.startswith("encoder.layer.") for k in state):
        return _map_hf(state)
    if any(re.search(r"(^|\.)blocks\.\d+\.attn\.qkv\.weight$", k) for k in state):
        return _map_mmaction(state)
    raise PbdError(
        "unrecognised checkpoint: expected OpenTAD/mmaction VideoMAE keys "
        "(…blocks.0.attn.qkv.weight) or HuggingFace VideoMAE keys (…encoder.layer.0…)"
    )


def _map_mmaction(state):
    out, conv = {}, Conversion("opentad", 0)
    for key, value in state.items():
        m = re.match(r"(?:.*\.)?blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        bias = re.match(r"(?:.*\.)?blocks\.(\d+)\.attn\.([qv]_bias)$", key)
        if bias:
            out[f"backbone.blocks.{bias[1]}.attn.{bias[2]}"] = value
        elif m and m[2] in _MMACTION_BLOCK:
            out[f"backbone.blocks.{m[1]}.{_MMACTION_BLOCK[m[2]]}.{m[3]}"] = value
        elif pe := re.match(r"(?:.*\.)?patch_embed\.projection\.(weight|bias)$", key):
            out[f"backbone.patch_embed.{pe[1]}"] = value
        elif nm := re.match(r"(?:.*\.)?backbone\.norm\.(weight|bias)$", key):
            out[f"backbone.norm.{nm[1]}"] = value
        else:
            _skip_or_keep(key, value, out, conv)
    conv.mapped = len(state) - len(conv.skipped)
    return out, conv


def _map_hf(state):
    out, conv, qkv = {}, Conversion("huggingface", 0), {}
    for key, value in state.items():
        m = re.match(r"(?:.*\.)?encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
        qv = re.match(r"(?:.*\.)?encoder\.layer\.(\d+)\.attention\.attention\.([qv]_bias)$", key)
        if qv:
            out[f"backbone.blocks.{qv[1]}.attn.{qv[2]}"] = value
        elif m and m[2].startswith("attention.attention.") and m[3] == "weight":
            qkv.setdefault(int(m[1]), {})[m[2].rsplit(".", 1)[1]] = value
        elif m and m[2].startswith("attention.attention."):  # newer transformers: Linear biases
            part = m[2].rsplit(".", 1)[1]
            if part == "key" and value.abs().max() > 0:
                raise PbdError(f"{key}: VideoMAE has no key bias, but this one is non-zero")
            if part != "key":
                out[f"backbone.blocks.{m[1]}.attn.{part[0]}_bias"] = value
        elif m and m[2] in _HF_BLOCK:
            out[f"backbone.blocks.{m[1]}.{_HF_BLOCK[m[2]]}.{m[3]}"] = value
        elif pe := re.match(r"(?:.*\.)?patch_embeddings\.projection\.(weight|bias)$", key):
            out[f"backbone.patch_embed.{pe[1]}"] = value
        elif nm := re.match(r"(?:videomae\.)?layernorm\.(weight|bias)$", key):
            out[f"backbone.norm.{nm[1]}"] = value
        else:
            _skip_or_keep(key, value, out, conv)
    for i, parts in qkv.items():  # HF keeps q, k and v as three Linear layers; we fuse them
        if set(parts) != {"query", "key", "value"}:
            raise PbdError(f"HuggingFace layer {i} lacks one of query/key/value weights")
        out[f"backbone.blocks.{i}.attn.qkv.weight"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]]
        )
    conv.mapped = len(state) - len(conv.skipped)
    return out, conv


def _skip_or_keep(key, value, out, conv):
    if _SKIPPED.search(key):
        conv.skipped.append(key)
    else:
        out[key] = value  # left unmapped: reported as unexpected by load_state


def convert_checkpoint(path: str | Path, model: Detector) -> tuple[Detector, Conversion]:
    """Load a checkpoint's backbone into `model` (in place, returned); strict on the backbone.

    Raises:
        PbdError: listing missing and unexpected keys and wrong shapes, e.g. when the
        checkpoint belongs to another architecture than `model.config.name`.
    """
    if model.backbone is None:
        raise PbdError("feature-mode models have no backbone to convert into")
    mapped, conv = map_keys(read_checkpoint(path))
    has_norm = any(k.startswith("backbone.norm.") for k in mapped)
    if has_norm != model.config.backbone.final_norm:
        model.config.backbone.final_norm = has_norm
        model.backbone.norm = (
            torch.nn.LayerNorm(model.config.backbone.dim, eps=1e-6)
            if has_norm
            else torch.nn.Identity()
        )
    state = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}
    load_state(model, {**state, **mapped}, str(path))
    return model, conv


def convert_model_dir(ckpt, name: str, out_dir, class_names: list[str], force: bool = False):
    """`pbd-deploy convert`: checkpoint -> model directory of architecture `name`."""
    prepare_output(out_dir, force)
    model, conversion = convert_checkpoint(ckpt, Detector(model_config(name, class_names)))
    add_history(
        model,
        "convert",
        source=str(ckpt),
        format=conversion.source_format,
        mapped=conversion.mapped,
        skipped=len(conversion.skipped),
    )
    save_model(model, out_dir, force)
    return conversion
