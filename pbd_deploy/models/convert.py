"""Import OpenTAD / AdaTAD / official-PBD detectors, or VideoMAE backbones (mmaction, HF).

Strict by default: every tensor of the checkpoint lands in the model and every tensor of the
model comes from the checkpoint; anything else is a one-line error naming the key, unless
`allow_partial` (then `Conversion.reinitialised` lists what kept its fresh initialisation).

- A whole OpenTAD detector (`backbone.model.backbone.*`, `projection.*`, `neck.*`,
  `rpn_head.*`) becomes our OpenTAD-mirroring head (`HeadConfig(kind="opentad")`) on our
  VideoMAE backbone, adapters included; the architecture is read from the tensor shapes and,
  for what shapes cannot tell, from the OpenTAD config file (models/opentad_config.py).
- `state_dict_ema` is preferred (OpenTAD evaluates the EMA weights) unless weights="raw".
- LongLoRA weights (`attn.lora_qkv.A/B`, `attn.lora_proj.A/B`, official PBD) are folded:
  W += scale * (A @ B)^T. Gapped block numbers (blocks 0, 1, 3, ...) set `block_indices`.
- A backbone-only checkpoint (mmaction VideoMAE, HuggingFace) needs `model` (a named size)
  and leaves the head freshly initialised, so it needs `allow_partial`.

Loading never unpickles code: safetensors, or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import copy
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from pbd_deploy.core.atomic import prepare_output
from pbd_deploy.errors import PbdError, reason
from pbd_deploy.models.detector import Detector, DetectorConfig
from pbd_deploy.models.io import CONFIG_FILE, add_history, save_model
from pbd_deploy.models.opentad_arch import opentad_architecture
from pbd_deploy.models.opentad_config import opentad_settings
from pbd_deploy.models.registry import model_config

# mmaction / OpenTAD names inside a ViT block -> ours
_MMACTION_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.qkv": "attn.qkv",
    "attn.proj": "attn.proj",
    "attn.q_bias": "attn.q_bias",
    "attn.v_bias": "attn.v_bias",
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
_VIT_PREFIX = re.compile(r"^(?:backbone\.model\.backbone\.|backbone\.|model\.backbone\.|)")
# Source tensors with no counterpart that do not change the outputs: the fixed sin-cos
# table (rebuilt from the architecture and checked), OpenTAD's unused fc_norm (its
# return_feat_map path never applies it), pre-training decoders and mean/std buffers.
_NOT_WEIGHTS = re.compile(
    r"(^|\.)(pos_embed|position_embeddings|fc_norm|decoder|mask_token|encoder_to_decoder"
    r"|data_preprocessor)(\.|$)"
)


@dataclass
class ConvertConfig:
    """Options of `pbd-deploy convert`.

    Attributes:
        model: named architecture (registry) for backbone-only checkpoints; for a whole
            OpenTAD detector, its input settings are used and its width/depth is checked.
        opentad_config: the OpenTAD config file the checkpoint was trained with.
        preset: instead of that file, a published OpenTAD config shipped with the package
            (`models.opentad_config.preset_names()`, e.g. adatad-thumos-videomae-s).
        allow_partial: allow tensors that cannot be placed or re-initialised parts.
        weights: "auto" (EMA when present), "ema" or "raw".
        lora_scale: LongLoRA's alpha (1 in the official PBD code).
        heads / head_heads / attn_window: what neither shapes nor a config file tell:
            ViT heads, projection attention heads, projection attention window (-1 global).
        fps: frame rate windows are sampled at (None: each file's). Refused with a config
            whose test pipeline samples as OpenTAD does: a sliding-window one (THUMOS14:
            every feature_stride * sample_stride-th frame, sampling "stride") or a
            whole-video resize one (ActivityNet, sampling "resize").
    """

    model: str | None = None
    opentad_config: str | None = None
    preset: str | None = None
    allow_partial: bool = False
    weights: str = "auto"
    lora_scale: float = 1.0
    heads: int | None = None
    head_heads: int | None = None
    attn_window: int | None = None
    fps: float | None = None

    def __post_init__(self):
        if self.weights not in ("auto", "ema", "raw"):
            raise PbdError(f"weights must be auto, ema or raw, not {self.weights!r}")
        if self.preset is not None:
            opentad_settings(self.opentad_config, self.preset)  # unknown name, or both given


@dataclass
class Conversion:
    """What a conversion did."""

    source_format: str
    mapped: int
    weights: str = "state_dict"
    folded_lora: int = 0
    ignored: list[str] = field(default_factory=list)  # no effect on outputs (see _NOT_WEIGHTS)
    unplaced: list[str] = field(default_factory=list)  # only with allow_partial
    reinitialised: list[str] = field(default_factory=list)  # only with allow_partial


def read_checkpoint(path: str | Path, weights: str = "auto") -> tuple[dict, str]:
    """Tensors of a .safetensors / .pth / .pt / .bin file and which entry they came from."""
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
    source = "state_dict"
    if isinstance(state, dict):
        if weights != "raw" and isinstance(state.get("state_dict_ema"), dict):
            state, source = state["state_dict_ema"], "state_dict_ema"
        elif weights == "ema":
            raise PbdError(f"{path} holds no state_dict_ema; use --weights raw or auto")
        for key in ("state_dict", "model", "module"):
            if isinstance(state.get(key), dict):
                state, source = state[key], key
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise PbdError(f"{path} holds no tensor state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}, source


def fold_lora(state: dict, scale: float) -> tuple[dict, int]:
    """Merge LongLoRA pairs `X.lora_NAME.A` (in, r) / `.B` (r, out) into `X.NAME.weight`."""
    out, folded = dict(state), 0
    for key in [k for k in state if k.endswith(".A") and ".lora_" in k]:
        stem = key[: -len(".A")]
        prefix, name = stem.rsplit(".lora_", 1)
        target = f"{prefix}.{name}.weight"
        if f"{stem}.B" not in state or target not in state:
            raise PbdError(f"LoRA tensor {key} has no matching {stem}.B or {target}")
        delta = scale * (state[key].double() @ state[f"{stem}.B"].double()).T
        if delta.shape != state[target].shape:
            raise PbdError(
                f"LoRA {stem}: A @ B is {tuple(delta.shape)}, {target} is "
                f"{tuple(state[target].shape)}"
            )
        out[target] = (state[target].double() + delta).to(state[target].dtype)
        del out[key], out[f"{stem}.B"]
        folded += 1
    return out, folded


def source_format(state: dict) -> str:
    if any(k.startswith(("rpn_head.", "projection.")) for k in state):
        return "opentad-detector"
    if any(".encoder.layer." in k or k.startswith("encoder.layer.") for k in state):
        return "huggingface"
    if any(re.search(r"(^|\.)blocks\.\d+\.attn\.qkv\.weight$", k) for k in state):
        return "mmaction"
    raise PbdError(
        "unrecognised checkpoint: expected an OpenTAD detector (rpn_head.…), OpenTAD/mmaction "
        "VideoMAE keys (…blocks.0.attn.qkv.weight) or HuggingFace VideoMAE keys (…encoder.layer.0…)"
    )


def map_keys(state: dict, fmt: str) -> tuple[dict, list[str], list[str], dict]:
    """Source keys -> ours; block numbers stay original.

    Returns (mapped, ignored, unplaced, origin): `origin` maps our key to the source's.
    """
    mapped, ignored, unplaced, qkv, origin = {}, [], [], {}, {}
    for key, value in state.items():
        ours = None
        if fmt == "huggingface":
            ours = _hf_key(key, value, qkv)
        elif key.startswith(("projection.", "neck.", "rpn_head.")):
            ours = f"head.{key}"
        else:
            ours = _mmaction_key(_VIT_PREFIX.sub("", key, count=1))
        if ours:
            mapped[ours], origin[ours] = value, key
        elif ours is None and _NOT_WEIGHTS.search(key):
            ignored.append(key)
        elif ours is None:
            unplaced.append(key)
    for i, parts in qkv.items():  # HF keeps q, k and v as three Linear layers; we fuse them
        if set(parts) != {"query", "key", "value"}:
            raise PbdError(f"HuggingFace layer {i} lacks one of query/key/value weights")
        mapped[f"backbone.blocks.{i}.attn.qkv.weight"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]]
        )
    return mapped, ignored, unplaced, origin


def _mmaction_key(key: str) -> str | None:
    if m := re.match(r"blocks\.(\d+)\.adapter\.(.+)$", key):
        return f"backbone.blocks.{m[1]}.adapter.{m[2]}"
    if m := re.match(r"blocks\.(\d+)\.(.+?)(\.weight|\.bias|)$", key):
        if m[2] in _MMACTION_BLOCK:
            return f"backbone.blocks.{m[1]}.{_MMACTION_BLOCK[m[2]]}{m[3]}"
    if m := re.match(r"patch_embed\.projection\.(weight|bias)$", key):
        return f"backbone.patch_embed.{m[1]}"
    if m := re.match(r"norm\.(weight|bias)$", key):
        return f"backbone.norm.{m[1]}"
    return None


def _hf_key(key: str, value: torch.Tensor, qkv: dict) -> str | None | bool:
    key = re.sub(r"^videomae\.", "", key)
    if m := re.match(r"encoder\.layer\.(\d+)\.attention\.attention\.([qv]_bias)$", key):
        return f"backbone.blocks.{m[1]}.attn.{m[2]}"
    m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
    if m and m[2].startswith("attention.attention."):
        part = m[2].rsplit(".", 1)[1]
        if m[3] == "weight":
            qkv.setdefault(int(m[1]), {})[part] = value
            return False  # placed via the fused qkv below
        if part == "key":  # newer transformers: Linear biases; VideoMAE's k bias is zero
            if value.abs().max() > 0:
                raise PbdError(f"{key}: VideoMAE has no key bias, but this one is non-zero")
            return False
        return f"backbone.blocks.{m[1]}.attn.{part[0]}_bias"
    if m and m[2] in _HF_BLOCK:
        return f"backbone.blocks.{m[1]}.{_HF_BLOCK[m[2]]}.{m[3]}"
    if m := re.match(r"embeddings\.patch_embeddings\.projection\.(weight|bias)$", key):
        return f"backbone.patch_embed.{m[1]}"
    if m := re.match(r"layernorm\.(weight|bias)$", key):
        return f"backbone.norm.{m[1]}"
    return None


def renumber_blocks(mapped: dict, origin: dict | None = None) -> list[int]:
    """Original block numbers present (gaps allowed) -> positions; returns the kept indices.

    Renames `mapped`'s keys (and `origin`'s) in place.
    """
    origin = {} if origin is None else origin
    found = sorted({int(m[1]) for k in mapped if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))})
    position = {index: p for p, index in enumerate(found)}
    for key in [k for k in mapped if k.startswith("backbone.blocks.")]:
        index = int(key.split(".")[2])
        rest = key.split(".", 3)[3]
        new = f"backbone.blocks.#{position[index]}.{rest}"
        mapped[new] = mapped.pop(key)
        if key in origin:
            origin[new] = origin.pop(key)
    for key in [k for k in mapped if k.startswith("backbone.blocks.#")]:
        mapped[key.replace(".#", ".", 1)] = mapped.pop(key)
        if key in origin:
            origin[key.replace(".#", ".", 1)] = origin.pop(key)
    return found


def convert_checkpoint(
    path: str | Path,
    class_names: list[str],
    config: ConvertConfig | None = None,
    architecture: DetectorConfig | None = None,
) -> tuple[Detector, Conversion]:
    """Build the detector a checkpoint describes and load it; see the module docstring.

    `architecture` (Python only) replaces `config.model` for backbone-only checkpoints.
    """
    config = config or ConvertConfig()
    raw, weights = read_checkpoint(path, config.weights)
    state, folded = fold_lora(raw, config.lora_scale)
    fmt = source_format(state)
    mapped, ignored, unplaced, origin = map_keys(state, fmt)
    kept = renumber_blocks(mapped, origin)
    if fmt == "opentad-detector":
        detector_config = opentad_architecture(mapped, kept, class_names, config, raw)
    else:
        if not (config.model or architecture):
            raise PbdError(f"{path} holds only a VideoMAE backbone; name its size with --model")
        detector_config = copy.deepcopy(architecture) or model_config(config.model, class_names)
        detector_config.backbone.block_indices = kept
        detector_config.backbone.depth = max(kept[-1] + 1, detector_config.backbone.depth)
        detector_config.backbone.final_norm = "backbone.norm.weight" in mapped
    if config.fps is not None:
        if detector_config.input.sampling == "resize":
            raise PbdError(
                f"--fps does not apply here: the config resizes each whole video to "
                f"{detector_config.input.window} frames picked from all of its frames "
                "(OpenTAD's ActivityNet input); leave --fps out"
            )
        if detector_config.input.sampling == "stride":
            raise PbdError(
                f"--fps does not apply here: the config takes every "
                f"{detector_config.input.frame_stride}th frame of each video whatever its "
                "rate (OpenTAD's sliding-window input); leave --fps out"
            )
        detector_config.input.fps = config.fps
    model = Detector(detector_config)
    conversion = Conversion(fmt, len(mapped), weights, folded, ignored)
    _load_strict(model, mapped, unplaced, origin, conversion, str(path), config.allow_partial)
    return model, conversion


def _load_strict(model, mapped, unplaced, origin, conversion, source, allow_partial) -> None:
    expected = model.state_dict()
    unplaced = unplaced + sorted(origin.get(k, k) for k in set(mapped) - set(expected))
    wrong = [
        f"{origin.get(k, k)} {tuple(v.shape)} != {tuple(expected[k].shape)}"
        for k, v in mapped.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if wrong:
        raise PbdError(
            f"{source} does not match the {model.config.name} architecture: wrong shapes "
            f"{_short(wrong)}"
        )
    missing = sorted(set(expected) - set(mapped))
    if not allow_partial and unplaced:
        raise PbdError(
            f"{source}: tensor {unplaced[0]} has no place in the {model.config.name} "
            f"architecture ({len(unplaced)} such); pass --allow-partial to leave them out"
        )
    if not allow_partial and missing:
        raise PbdError(
            f"{source} has no weights for {missing[0]} ({len(missing)} tensors, e.g. the "
            "detection head); pass --allow-partial to initialise them afresh"
        )
    conversion.unplaced, conversion.reinitialised = unplaced, missing
    model.load_state_dict({k: v for k, v in mapped.items() if k in expected}, strict=False)


def _short(items: list[str], limit: int = 4) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more


def convert_model_dir(
    ckpt,
    out_dir,
    class_names: list[str],
    config: ConvertConfig | None = None,
    force: bool = False,
) -> Conversion:
    """`pbd-deploy convert`: checkpoint -> model directory."""
    config = config or ConvertConfig()
    prepare_output(out_dir, force, marker=CONFIG_FILE)
    model, conversion = convert_checkpoint(ckpt, class_names, config)
    add_history(
        model,
        "convert",
        source=str(ckpt),
        format=conversion.source_format,
        weights=conversion.weights,
        mapped=conversion.mapped,
        folded_lora=conversion.folded_lora,
        reinitialised=len(conversion.reinitialised),
        left_out=len(conversion.unplaced),
        opentad_config=config.opentad_config,
        preset=config.preset,
    )
    save_model(model, out_dir, force)
    return conversion
