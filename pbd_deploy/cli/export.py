"""Commands for deployment: export, build-engine, infer."""

from __future__ import annotations

import click

from pbd_deploy.cli.base import PAST_END, SUBSETS, RichProgress, friendly, main
from pbd_deploy.export.config import ExportConfig

_D = ExportConfig()


@main.command()
@click.argument("model_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Export directory.")
@click.option("--window", type=int, help="Frames (or feature steps) per window [model's].")
@click.option("--batch", default=_D.batch, show_default=True, help="Batch size of the graph.")
@click.option("--dynamic", is_flag=True, help="Dynamic batch and temporal length.")
@click.option("--opset", default=_D.opset, show_default=True)
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx and measure its mAP.")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (QDQ); needs --calib.")
@click.option("--calib", type=click.Path(), help="Dataset whose calibration split calibrates INT8.")
@click.option(
    "--calib-windows", default=_D.calib_windows, show_default=True, help="INT8 calibration windows."
)
@click.option("--data", type=click.Path(), help="Dataset for real-input parity and mAP [--calib].")
@click.option("--split", default=_D.split, show_default=True, help="Split of the mAP figures.")
@click.option("--parity-tolerance", default=_D.parity_tolerance, show_default=True,
              help="Largest max-abs difference accepted between torch and ONNX Runtime.")  # fmt: skip
@click.option("--trt", is_flag=True, help="Build model.engine (needs TensorRT and a GPU).")
@click.option("--workspace", default=_D.workspace_gib, show_default=True, help="GiB for TensorRT.")
@click.option("--dla-core", type=int, help="Build for this DLA core (Jetson).")
@PAST_END
@SUBSETS
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@friendly
def export(
    model_dir,
    out,
    window,
    batch,
    dynamic,
    opset,
    fp16,
    int8,
    calib,
    calib_windows,
    data,
    split,
    parity_tolerance,
    trt,
    workspace,
    dla_core,
    past_end,
    subsets,
    force,
):
    """Export MODEL_DIR to ONNX (+ model.json), check parity with ONNX Runtime, add variants.

    \b
    Example:
      pbd-deploy export small/ --out deploy/ --fp16 --int8 --calib data/ --trt
    """
    from pbd_deploy.export import export_model

    config = ExportConfig(
        window=window,
        batch=batch,
        dynamic=dynamic,
        opset=opset,
        fp16=fp16,
        int8=int8,
        calib=calib,
        calib_windows=calib_windows,
        data=data,
        split=split,
        parity_tolerance=parity_tolerance,
        trt=trt,
        workspace_gib=workspace,
        dla_core=dla_core,
        past_end=past_end,
        subsets=subsets,
    )
    with RichProgress() as progress:
        manifest = export_model(model_dir, out, config, progress=progress, force=force)
    for line in summary_lines(manifest):
        click.echo(line)
    click.echo(f"wrote {out}")


def summary_lines(manifest: dict) -> list[str]:
    """What an export measured, one figure per line."""
    p = manifest["parity"]
    lines = [
        f"parity (ORT CPU vs torch), {k} inputs: max abs diff scores {v['scores']:.3g}, "
        f"segments {v['segments']:.3g} points ({v['segments_per_stride']:.3g} per stride)"
        for k, v in p.items()
        if isinstance(v, dict)
    ]
    lines.append(f"same detections after post-processing (core.compare): {p['detections_same']}")
    acc = manifest.get("accuracy")
    if acc:
        lines.append(
            f"{acc['split']} average mAP: torch {100 * acc['torch']['average_mAP']:.2f}, "
            f"ONNX fp32 {100 * acc['onnx_fp32']['average_mAP']:.2f} "
            f"(diff {100 * acc['map_diff_fp32']:+.2f})"
        )
    for name in ("fp16", "int8"):
        info = manifest.get(name)
        if info and info.get("mAP"):
            lines.append(
                f"{name} average mAP {100 * info['mAP']['average_mAP']:.2f} "
                f"(vs fp32 {100 * info['map_diff_vs_fp32']:+.2f})"
            )
    engine = manifest.get("engine", {})
    if engine.get("built"):
        lines.append(f"engine: model.engine ({engine['precision']}, {engine['device_name']})")
    else:
        lines.append(f"engine not built ({engine.get('reason')}); see {engine.get('script')}")
    return lines


@main.command(name="build-engine")
@click.argument("onnx_file", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="Engine file [beside the ONNX].")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), help="[the ONNX file's]")
@click.option("--workspace", default=_D.workspace_gib, show_default=True, help="GiB for tactics.")
@click.option("--dla-core", type=int, help="Build for this DLA core (Jetson).")
@click.option("--timing-cache", type=click.Path(dir_okay=False),
              help="[~/.cache/pbd-deploy, named by TensorRT version and GPU]")
@friendly
def build_engine(onnx_file, out, precision, workspace, dla_core, timing_cache):
    """Build a TensorRT engine from an exported ONNX file, on this (target) device.

    \b
    Example (on the Jetson):
      pbd-deploy build-engine deploy/model.fp16.onnx --precision fp16
    """
    from pbd_deploy.export.tensorrt import build_engine_file

    meta = build_engine_file(onnx_file, out, precision, workspace, dla_core, timing_cache)
    click.echo(
        f"built {meta['engine']} ({meta['precision']}) for {meta['device_name']} "
        f"sm {'.'.join(map(str, meta['compute_capability']))} with TensorRT {meta['trt_version']}"
    )


@main.command()
@click.argument("model", type=click.Path())
@click.argument("video", type=click.Path())
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write detections here.")
@click.option("--top", default=10, show_default=True, help="Detections to print.")
@click.option(
    "--video-scores",
    type=click.Path(dir_okay=False),
    help="A video classifier's scores (OpenTAD's CUHK results JSON; VIDEO's entry is its "
    "name stem) to fuse with a class-agnostic OpenTAD model's detections (ActivityNet).",
)
@friendly
def infer(model, video, json_out, top, video_scores):
    """Detect actions in VIDEO with an exported model (.onnx or .engine), without torch.

    \b
    Example:
      pbd-deploy infer deploy/model.onnx video.mp4 --json dets.json
    """
    from pbd_deploy.runtime.detector import detect_file

    detections = detect_file(model, video, json_out, video_scores)
    for d in detections[:top]:
        click.echo(f"{d.start_s:8.2f} {d.end_s:8.2f}  {d.score:.3f}  {d.label}")
    click.echo(f"{len(detections)} detections" + (f"; wrote {json_out}" if json_out else ""))
