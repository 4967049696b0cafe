"""The architecture of an OpenTAD detector checkpoint: from its tensor shapes + its config.

Shapes give widths, depths, which blocks exist and carry adapters, the pyramid depth and
the class count. They cannot give attention heads, the attention window, regression ranges
or the window length; those come from the OpenTAD config file (`--opentad-config`) or
explicit options, and a missing one is an error rather than a guess.
"""

from __future__ import annotations

import math
import re

import torch

from pbd_deploy.errors import PbdError
from pbd_deploy.models.actionformer import HeadConfig
from pbd_deploy.models.detector import DetectorConfig, InputConfig
from pbd_deploy.models.opentad_config import get, opentad_settings
from pbd_deploy.models.registry import model_config
from pbd_deploy.models.vit import BackboneConfig, sincos_table

# VideoMAE's published sizes (width -> heads), used when neither config nor option says.
_VIDEOMAE_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 16}


def _count(mapped: dict, pattern: str) -> int:
    found = {int(m[1]) for k in mapped if (m := re.match(pattern, k))}
    if found and found != set(range(len(found))):
        raise PbdError(f"checkpoint layers {sorted(found)} matching {pattern} are not 0..n-1")
    return len(found)


def _need(value, what: str, option: str):
    if value is None:
        raise PbdError(
            f"the checkpoint does not tell {what}; pass --opentad-config FILE (the config it "
            f"was trained with) or {option}"
        )
    return value


def opentad_architecture(mapped: dict, kept: list[int], class_names, options, raw: dict):
    """DetectorConfig for a mapped OpenTAD detector state (`backbone.*` / `head.*` keys)."""
    cfg, source = opentad_settings(options.opentad_config, options.preset)
    vit = get(cfg, "model.backbone.backbone", {})
    proj = get(cfg, "model.projection", {})
    rpn = get(cfg, "model.rpn_head", {})
    if "backbone.patch_embed.weight" not in mapped:
        raise PbdError("this OpenTAD checkpoint has no VideoMAE backbone (patch_embed) to convert")

    # --- backbone: shapes
    patch_w = mapped["backbone.patch_embed.weight"]
    dim, tubelet, patch = patch_w.shape[0], patch_w.shape[2], patch_w.shape[3]
    fc1 = mapped["backbone.blocks.0.mlp.fc1.weight"]
    chunk = get(vit, "num_frames", 16)
    adapters = [
        i for p, i in enumerate(kept) if f"backbone.blocks.{p}.adapter.down_proj.weight" in mapped
    ]
    ratio = 0.25
    if adapters:
        p = kept.index(adapters[0])
        ratio = mapped[f"backbone.blocks.{p}.adapter.down_proj.weight"].shape[0] / dim
        kernel = mapped[f"backbone.blocks.{p}.adapter.dwconv.weight"].shape[-1]
        if kernel != 3:
            raise PbdError(f"adapter temporal kernel {kernel}: only AdaTAD's 3 is supported")
    heads = options.heads or get(vit, "num_heads") or _VIDEOMAE_HEADS.get(dim)
    heads = _need(heads, f"the ViT's attention heads (width {dim})", "--heads N")

    # --- head: shapes
    embed0 = mapped["head.projection.embed.0.conv.weight"]
    head_dim, in_dim = embed0.shape[0], embed0.shape[1]
    levels = _count(mapped, r"head\.projection\.branch\.(\d+)\.") + 1
    for what, pattern in (
        ("neck norms", r"head\.neck\.fpn_norms\.(\d+)\."),
        ("regression scales", r"head\.rpn_head\.scale\.(\d+)\."),
    ):
        if _count(mapped, pattern) != levels:
            raise PbdError(f"checkpoint has {levels} projection levels but other {what} counts")
    num_classes = mapped["head.rpn_head.cls_head.weight"].shape[0]
    if cfg:
        _check_fits(source, cfg, {
            "model.backbone.backbone.embed_dims": dim,
            "model.backbone.backbone.patch_size": patch,
            "model.backbone.backbone.adapter_index": adapters,
            "model.projection.in_channels": in_dim,
            "model.projection.out_channels": head_dim,
            "model.projection.arch": [
                _count(mapped, r"head\.projection\.embed\.(\d+)\."),
                _count(mapped, r"head\.projection\.stem\.(\d+)\."),
                levels - 1,
            ],
            "model.rpn_head.num_classes": num_classes,
            "model.rpn_head.feat_channels": mapped["head.rpn_head.cls_convs.0.conv.weight"].shape[0],
            "model.rpn_head.num_convs": _count(mapped, r"head\.rpn_head\.cls_convs\.(\d+)\."),
        }, depth=kept[-1] + 1)  # fmt: skip
    if num_classes != len(class_names):
        raise PbdError(
            f"the checkpoint detects {num_classes} classes, {len(class_names)} class names given; "
            "pass --num-classes or --classes to match"
        )
    class_agnostic = _class_agnostic(cfg)
    if class_agnostic and num_classes != 1:
        raise PbdError(
            f"{source} trains class-agnostically (dataset.*.class_agnostic=True), but the "
            f"checkpoint detects {num_classes} classes; give the config it was trained with"
        )
    window_attn = (
        options.attn_window
        if options.attn_window is not None
        else get(proj, "attn_cfg.n_mha_win_size")
    )
    window_attn = _need(window_attn, "the projection's attention window", "--attn-window N")
    if isinstance(window_attn, (list, tuple)):
        if len(set(window_attn)) != 1:
            raise PbdError("per-level attention windows are not supported; one value for all")
        window_attn = window_attn[0]
    head_heads = _need(
        options.head_heads or get(proj, "attn_cfg.n_head"),
        "the projection's attention heads",
        "--head-heads N",
    )
    strides = get(rpn, "prior_generator.strides", [2**i for i in range(levels)])
    if list(strides) != [2**i for i in range(levels)]:
        raise PbdError(f"OpenTAD strides {strides} unsupported: levels must have strides 2**l")
    ranges = get(rpn, "prior_generator.regression_range")
    if ranges is None and levels == 6:  # OpenTAD's _base_/models/actionformer.py
        ranges = [(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000)]
    ranges = _need(ranges, "the regression ranges", "a config with prior_generator")

    # --- input: the named model, the config's window and test pipeline
    base = model_config(options.model, class_names) if options.model else None
    if base is not None and (base.backbone.dim, base.backbone.depth) != (dim, max(kept) + 1):
        raise PbdError(
            f"the checkpoint's backbone is width {dim}, {max(kept) + 1} blocks; --model "
            f"{options.model} is width {base.backbone.dim}, {base.backbone.depth} blocks"
        )
    inp = base.input if base else InputConfig()
    length = get(proj, "max_seq_len") or get(cfg, "window_size") or inp.window
    frames = get(vit, "total_frames") or get(cfg, "window_size") or inp.window
    inp = _input_from_config(cfg, inp, frames)
    resize_length = get(cfg, "dataset.test.resize_length", 128)
    if inp.sampling == "resize" and length != resize_length:  # OpenTAD's seconds map uses it
        raise PbdError(
            f"the OpenTAD config resizes videos to {resize_length} head points (resize_length) "
            f"but its projection takes {length} (max_seq_len); the config does not fit together"
        )

    backbone = BackboneConfig(
        dim=dim,
        depth=max(get(vit, "depth", 0), kept[-1] + 1),
        heads=heads,
        mlp_ratio=fc1.shape[0] / dim,
        patch=patch,
        tubelet=tubelet,
        chunk_frames=chunk,
        img_size=_table_size(raw, dim, patch, tubelet, chunk, get(vit, "img_size", 224)),
        final_norm="backbone.norm.weight" in mapped,
        drop_path=0.0,
        block_indices=kept,
        adapter_indices=adapters or None,
        adapter_ratio=ratio,
        adapter_frames=frames if adapters else None,
    )
    head = HeadConfig(
        kind="opentad",
        in_dim=in_dim,
        dim=head_dim,
        length=length,
        embed_layers=_count(mapped, r"head\.projection\.embed\.(\d+)\."),
        stem_layers=_count(mapped, r"head\.projection\.stem\.(\d+)\."),
        levels=levels,
        heads=head_heads,
        attn_window=window_attn,
        head_layers=_count(mapped, r"head\.rpn_head\.cls_convs\.(\d+)\."),
        regression_ranges=[list(r) for r in ranges],
        center_radius=get(rpn, "center_sample_radius", 1.5),
        prior_prob=get(rpn, "cls_prior_prob", 0.01),
        input_norm=False,
        feat_dim=mapped["head.rpn_head.cls_convs.0.conv.weight"].shape[0],
        affine_drop_path=any(".drop_path_attn.scale" in k for k in mapped),
        drop_path=get(proj, "path_pdrop", 0.1),
        abs_pe=bool(get(proj, "use_abs_pe", False)),
        masked=True,  # OpenTAD masks the padded points of a window (models/opentad.py)
    )
    name = options.model or f"opentad-vit-{dim}x{len(kept)}"
    return DetectorConfig(
        name=name, class_names=list(class_names), input=inp, backbone=backbone, head=head,
        class_agnostic=class_agnostic, **_post_and_thresholds(cfg, inp.sampling),
    )  # fmt: skip


def _class_agnostic(cfg: dict) -> bool:
    """Whether the config's datasets label every segment 0 (`class_agnostic=True`, as the
    AdaTAD ActivityNet configs do in train, val and test; the presets keep val and test)."""
    parts = ("train", "val", "test")
    return any(get(cfg, f"dataset.{part}.class_agnostic", False) for part in parts)


def _check_fits(source: str, cfg: dict, facts: dict, depth: int) -> None:
    """One line naming the first setting of `source` that the checkpoint contradicts."""
    for key, found in facts.items():
        wanted = get(cfg, key)
        if wanted is None:
            continue
        if key.endswith("adapter_index"):  # a dropped block takes its adapter with it
            fits = set(found) <= set(wanted) and (bool(found) or not wanted)
        else:
            wanted = list(wanted) if isinstance(wanted, (list, tuple)) else wanted
            fits = wanted == found
        if not fits:
            raise PbdError(
                f"{source} does not fit this checkpoint: {key} is {wanted} there, {found} in the "
                "checkpoint (give the config or preset it was trained with)"
            )
    vit_depth = get(cfg, "model.backbone.backbone.depth")
    if vit_depth is not None and vit_depth < depth:
        raise PbdError(
            f"{source} does not fit this checkpoint: {vit_depth} ViT blocks there, block "
            f"{depth - 1} in the checkpoint"
        )


def _input_from_config(cfg: dict, inp: InputConfig, frames: int) -> InputConfig:
    """Window, test-time resize/crop, normalisation and sliding stride of the config.

    A test pipeline that loads frames with `LoadFrames(method="resize")` (OpenTAD's
    ActivityNet configs) selects sampling "resize": each whole video becomes one window of
    `resize_length * scale_factor` frames (192 x 4 = 768 for AdaTAD). One with
    `LoadFrames(method="sliding_window")` (THUMOS14) selects sampling "stride": every
    `feature_stride * sample_stride`-th frame of the file, windows placed as OpenTAD's
    `SlidingWindowDataset` (stride `int(window_size * (1 - window_overlap_ratio))`).
    """
    resize, crop = inp.resize, inp.crop
    resized, frame_stride = _resize_frames(cfg), _frame_stride(cfg, frames)
    if resized is not None and resized != frames:
        raise PbdError(
            f"the OpenTAD config resizes each video to {resized} frames but its backbone "
            f"takes {frames} (total_frames); the config does not fit together"
        )
    for step in get(cfg, "dataset.test.pipeline", []) or []:
        if not isinstance(step, dict):
            continue
        if step.get("type") == "mmaction.Resize" and isinstance(step.get("scale"), (tuple, list)):
            resize = step["scale"][1] if step["scale"][0] == -1 else resize
        if step.get("type") == "mmaction.CenterCrop":
            crop = step.get("crop_size", crop)
    pre = get(cfg, "model.backbone.data_preprocessor", {})
    overlap = get(cfg, "dataset.test.window_overlap_ratio")
    if overlap is not None:
        stride = max(1, round(frames * (1 - overlap)))
    else:  # the named model's stride if it is for this window, else the default
        stride = inp.stride if inp.window == frames else None
    sampling, fps = "rate", inp.fps
    if resized is not None:  # one window per video, of frames picked from all of its frames
        sampling, stride, fps = "resize", frames, None
    elif frame_stride is not None:  # every k-th frame; OpenTAD's window stride and default
        sampling, fps = "stride", None
        stride = max(1, int(frames * (1 - get(cfg, "dataset.test.window_overlap_ratio", 0.25))))
    return InputConfig(
        sampling=sampling,
        window=frames,
        stride=stride,
        fps=fps,
        frame_stride=frame_stride or 1,
        resize=resize,
        crop=crop,
        mean=tuple(pre.get("mean", inp.mean)),
        std=tuple(pre.get("std", inp.std)),
    )


def _resize_frames(cfg: dict) -> int | None:
    """Frames per video of a whole-video resize test pipeline, None for sliding windows."""
    for step in get(cfg, "dataset.test.pipeline", []) or []:
        if isinstance(step, dict) and step.get("type") == "LoadFrames":
            if step.get("method", "resize") != "resize":
                return None
            length = get(cfg, "dataset.test.resize_length", 128)  # ResizeDataset's default
            return int(length) * int(step.get("scale_factor", 1))
    return None


def _frame_stride(cfg: dict, frames: int) -> int | None:
    """Frames of the file per input frame of a sliding-window test pipeline (OpenTAD's
    `snippet_stride // scale_factor`), None for any other pipeline."""
    for step in get(cfg, "dataset.test.pipeline", []) or []:
        if isinstance(step, dict) and step.get("type") == "LoadFrames":
            if step.get("method", "resize") != "sliding_window":
                return None
            snippet = int(get(cfg, "dataset.test.feature_stride", -1)) * int(
                get(cfg, "dataset.test.sample_stride", 1)
            )
            scale = int(step.get("scale_factor", 1))
            if snippet < 1:
                raise PbdError(
                    "the OpenTAD config's test dataset slides windows without a positive "
                    "feature_stride; give the config it was trained with"
                )
            if scale != 1:  # OpenTAD then places windows in snippets of `scale` frames
                raise PbdError(
                    f"OpenTAD sliding windows with LoadFrames scale_factor={scale} are not "
                    "supported (every AdaTAD VideoMAE THUMOS14 config uses 1)"
                )
            window = get(cfg, "dataset.test.window_size", frames)
            if window != frames:
                raise PbdError(
                    f"the OpenTAD config slides windows of {window} frames but its backbone "
                    f"takes {frames} (total_frames); the config does not fit together"
                )
            return snippet
    return None


def _table_size(raw: dict, dim: int, patch: int, tubelet: int, chunk: int, default: int) -> int:
    """img_size the sin-cos table was built at, from the stored table; checks its values."""
    tables = [v for k, v in raw.items() if k.endswith("backbone.pos_embed")]
    if not tables:
        return default
    table = tables[0].reshape(-1, dim)
    grid = math.isqrt(table.shape[0] // (chunk // tubelet))
    expected = sincos_table(table.shape[0], dim)
    if grid * grid * (chunk // tubelet) != table.shape[0] or not torch.allclose(
        table.float(), expected, atol=1e-5
    ):
        raise PbdError("the checkpoint's pos_embed is not VideoMAE's sin-cos table; unsupported")
    return grid * patch


def _post_and_thresholds(cfg: dict, sampling: str) -> dict:
    """DetectorConfig's `postprocess` and `thresholds` from the config's `post_processing`
    and `evaluation` sections, with OpenTAD's own defaults for what they leave out
    (`batched_nms`'s arguments, `pre_nms_*` of its detectors, CUHK `topk`). Without them
    (no config: OpenTAD's base model config has neither) ours and THUMOS14's stay."""
    out = {}
    tious = get(cfg, "evaluation.tiou_thresholds")
    if tious is not None:
        out["thresholds"] = tuple(tious)
    if not isinstance(get(cfg, "post_processing.nms"), dict):
        return out
    nms = lambda key, default: get(cfg, f"post_processing.nms.{key}", default)  # noqa: E731
    if not nms("use_soft_nms", True) or nms("method", 2) != 2:
        raise PbdError(
            "OpenTAD post_processing.nms: only Gaussian Soft-NMS (use_soft_nms=True, method=2) "
            "is supported"
        )
    classifier = get(cfg, "post_processing.external_cls")
    if isinstance(classifier, dict) and classifier.get("type") != "CUHKANETClassifier":
        raise PbdError(
            f"OpenTAD external classifier {classifier.get('type')!r} is not supported; "
            "only CUHKANETClassifier (ActivityNet's) is"
        )
    post = dict(
        method="opentad",
        pre_nms_thresh=get(cfg, "post_processing.pre_nms_thresh", 0.001),
        pre_nms_topk=get(cfg, "post_processing.pre_nms_topk", 2000),
        sigma=nms("sigma", 0.5),
        max_seg_num=nms("max_seg_num", 100),
        min_score=nms("min_score", 0.0),
        multiclass=nms("multiclass", True),
        voting_thresh=nms("voting_thresh", 0.0),
        sliding_window=sampling != "resize",  # OpenTAD: SlidingWindowDataset vs resized videos
    )
    if isinstance(classifier, dict):
        post["video_topk"] = get(classifier, "topk", 1)
    out["postprocess"] = post
    return out
