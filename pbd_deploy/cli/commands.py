"""Commands for data and models: synth, init, train, eval, info, convert, quickstart."""

from __future__ import annotations

import json

import click

from pbd_deploy.cli.base import (
    PAST_END,
    SUBSETS,
    ConfigDefault,
    RichProgress,
    _console,
    explicit,
    friendly,
    main,
)
from pbd_deploy.errors import PbdError

# Defaults come from the config dataclasses, read only for `--help` or a run of the command.
SYNTH = {"cls": ConfigDefault, "config": "pbd_deploy.data.synthetic:SynthConfig"}
TRAIN = {"cls": ConfigDefault, "config": "pbd_deploy.train:TrainConfig"}


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--videos", type=int, help="Number of videos.", **SYNTH)
@click.option("--classes", type=int, help="Number of action classes.", **SYNTH)
@click.option("--size", type=int, help="Width and height in pixels (even).", **SYNTH)
@click.option("--fps", type=float, help="Frame rate of the videos.", **SYNTH)
@click.option("--min-duration", type=float, help="Shortest video in seconds.", **SYNTH)
@click.option("--max-duration", type=float, help="Longest video in seconds.", **SYNTH)
@click.option("--split-fractions", type=(float, float, float),
              help="Shares of training, validation and test videos.", **SYNTH)  # fmt: skip
@click.option("--noise", type=float, help="Std of per-pixel noise, 0..255 units.", **SYNTH)
@click.option("--distractors", type=int, help="Objects wandering in every video.", **SYNTH)
@click.option("--contrast", type=float, help="Foreground contrast (below 1: harder).", **SYNTH)
@click.option("--like", type=click.Path(dir_okay=False),
              help="Copy durations and segments from this ANN.json (e.g. thumos14.json).")  # fmt: skip
@click.option("--seed", default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@friendly
def synth(out, force, **options):
    """Write a synthetic TAD benchmark (real .mp4 files + annotations.json) to OUT.

    \b
    Examples:
      pbd-deploy synth data/ --videos 160 --classes 5
      pbd-deploy synth big/ --videos 32 --size 172 --fps 30 --min-duration 120 --max-duration 360
    """
    from pbd_deploy.data.synthetic import SynthConfig, make_synthetic

    config = SynthConfig(**options)  # one field per option
    with RichProgress() as progress:
        path = make_synthetic(
            out, config, force=force, progress=lambda d, t: progress("synth", d, t)
        )
    click.echo(f"wrote {config.videos} videos and annotations.json to {path}")


@main.command()
@click.argument("name")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--num-classes", type=int, help="Number of classes (names class0..classK-1).")
@click.option("--classes", help="Comma-separated class names.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@friendly
def init(name, out, num_classes, classes, force):
    """Write a freshly initialised model directory of the named architecture.

    \b
    Example:
      pbd-deploy init videomae-s --out vs/ --num-classes 20
    """
    from pbd_deploy.models.registry import init_model_dir

    path = init_model_dir(name, out, _class_names(num_classes, classes), force=force)
    click.echo(f"wrote {name} to {path}")


def _class_names(num_classes, classes) -> list[str]:
    if classes:
        return [c.strip() for c in classes.split(",") if c.strip()]
    if not num_classes or num_classes < 1:
        raise PbdError("give --num-classes K (K >= 1) or --classes a,b,c")
    return [f"class{i}" for i in range(num_classes)]


@main.command()
@click.option("--data", required=True, type=click.Path(), help="Dataset directory.")
@click.option(
    "--model",
    default="videomae-tiny",
    show_default=True,
    help="Architecture name, or a model directory to fine-tune.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=int, **TRAIN)
@click.option("--batch-size", type=int, **TRAIN)
@click.option("--lr", type=float, **TRAIN)
@click.option("--weight-decay", type=float, help="AdamW weight decay.", **TRAIN)
@click.option("--warmup-epochs", type=float,
              help="Linear learning-rate warm-up before the cosine decay.", **TRAIN)  # fmt: skip
@click.option("--clip-grad", type=float, help="Gradient norm clipping threshold.", **TRAIN)
@click.option("--windows-per-video", type=int,
              help="Training windows drawn per video and epoch.", **TRAIN)  # fmt: skip
@click.option("--ema", is_flag=True, help="Keep an exponential moving average of the weights.")
@click.option("--ema-decay", type=float, help="Decay of that average per step.", **TRAIN)
@click.option("--decay-norms/--no-decay-norms",
              help="Weight decay on norms, biases and scales too.", **TRAIN)  # fmt: skip
@click.option("--drop-path", type=float,
              help="Stochastic depth rising with depth to this [the model's].", **TRAIN)  # fmt: skip
@click.option("--augment/--no-augment",
              help="RandomResizedCrop, flip, colour jitter, truncation crop ratio.", **TRAIN)  # fmt: skip
@click.option("--recipe", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
              help="Preset: quick (CPU-sized) or paper (lr 1e-4, 60 epochs, EMA, augmentations);"
              " options given explicitly override it.")  # fmt: skip
@click.option("--device", default="cpu", show_default=True)
@click.option("--workers", type=int, help="Data loader processes (0: none).", **TRAIN)
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
              help="Autocast precision (fp16 with loss scaling, CUDA only).", **TRAIN)  # fmt: skip
@click.option("--checkpointing", is_flag=True, help="Recompute block activations in backward.")
@click.option("--seed", default=0, show_default=True)
@PAST_END
@SUBSETS
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.train-state.pt.")
@friendly
def train(data, model, out, recipe, force, resume, **options):
    """Train a detector; the checkpoint with the best validation mAP is kept.

    \b
    Example:
      pbd-deploy train --data data/ --model videomae-tiny --out base/
    """
    from pbd_deploy.train import TrainConfig, train_model_dir

    config = TrainConfig.from_recipe(recipe, **explicit(options))
    with RichProgress() as progress:
        summary = train_model_dir(
            data, model, out, config, force=force, progress=progress, resume=resume
        )
    click.echo(
        f"best val average mAP {summary['best_val_mAP']:.4f} at epoch "
        f"{summary['best_epoch']} ({summary['wall_s']:.0f} s); saved to {out}"
    )


@main.command(name="eval")
@click.argument("model", type=click.Path())
@click.option("--data", type=click.Path(), help="Dataset directory (to run a model).")
@click.option("--annotations", type=click.Path(), help="ANN.json (to score a predictions file).")
@click.option("--split", default="test", show_default=True, help="train, val or test.")
@click.option(
    "--thresholds",
    type=click.Choice(["thumos", "activitynet"]),
    help="tIoU thresholds: 0.3:0.1:0.7 or 0.5:0.05:0.95. Default: the model's (a "
    "predictions file: thumos).",
)
@click.option(
    "--video-scores",
    type=click.Path(dir_okay=False),
    help="A video classifier's scores (OpenTAD's CUHK results JSON) to fuse with a "
    "class-agnostic OpenTAD model's detections (ActivityNet).",
)
@click.option(
    "--class-agnostic",
    is_flag=True,
    help="Score a predictions file class-agnostically: every label, predicted and annotated, "
    "is one class (a model says so itself: config.json / model.json class_agnostic).",
)
@click.option(
    "--save-predictions",
    type=click.Path(dir_okay=False),
    help="Also write the detections in ActivityNet results format.",
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--workers", default=0, show_default=True, help="Data loader processes (0: none).")
@PAST_END
@SUBSETS
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
def evaluate(
    model, data, annotations, split, thresholds, video_scores, class_agnostic, save_predictions,
    device, workers, past_end, subsets, as_json,
):  # fmt: skip
    """mAP@tIoU of a model on a split, or of an ActivityNet-format predictions file.

    \b
    Examples:
      pbd-deploy eval base/ --data data/ --split test
      pbd-deploy eval preds.json --annotations data/annotations.json --split test --json
    """
    from pbd_deploy.eval.evaluate import evaluate_path

    result = evaluate_path(
        model,
        data=data,
        annotations=annotations,
        split=split,
        thresholds=thresholds,
        video_scores=video_scores,
        class_agnostic=class_agnostic,
        device=device,
        save_predictions=save_predictions,
        past_end=past_end,
        workers=workers,
        subsets=subsets,
    )
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    for t, m in zip(result.thresholds, result.mAP):
        click.echo(f"mAP@{t:.2f} = {100 * m:.2f}")
    click.echo(f"average mAP = {100 * result.average_mAP:.2f}")


@main.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
def info(model, as_json):
    """Architecture, kept blocks, parameters, MACs per window and history of a model.

    \b
    Example:
      pbd-deploy info small/ --json
    """
    from pbd_deploy.models.info import model_info

    data = model_info(model)
    if as_json:
        click.echo(json.dumps(data))
        return
    _print_info(data)


def _print_info(data: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{data['name']} ({data['path']})", show_header=False)
    rows = [
        ("mode", data["mode"]),
        ("classes", f"{len(data['classes'])}: {', '.join(data['classes'])}"),
        ("width", data["width"]),
        ("depth", data["depth"]),
        ("kept blocks", f"{len(data['kept_blocks'])}: {data['kept_blocks']}"),
        ("heads per block", data["block_heads"]),
        ("MLP units per block", data["mlp_dims"]),
        ("params", f"{data['params'] / 1e6:.3f} M"),
        (
            "MACs / window",
            f"{data['macs'] / 1e9:.3f} G (backbone {data['macs_backbone'] / 1e9:.3f} G,"
            f" head {data['macs_head'] / 1e9:.3f} G)",
        ),
        ("window", f"{data['input']['window']} {'frames' if data['mode'] == 'video' else 'steps'}"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    for i, entry in enumerate(data["history"]):
        table.add_row(f"history {i}: {entry['stage']}", _history_text(entry))
    _console(stderr=False).print(table)


def _history_text(entry: dict) -> str:
    """One history record as text; compression iterations get a readable summary."""
    if entry["stage"] != "compress":
        figures = {k: v for k, v in entry.items() if k not in ("stage", "time", "config")}
        return f"{entry.get('time', '')} {figures}"
    scores = ", ".join(f"{b}: {s:.4f}" for b, s in entry.get("scores", {}).items())
    return (
        f"{entry.get('time', '')} iteration {entry['iteration']}: dropped {entry['dropped']}"
        f" by {entry['criterion']} (candidate scores {scores or 'none'}); "
        f"{entry['macs'] / 1e9:.4f} GMACs, {entry['params'] / 1e6:.3f} M params; "
        f"val mAP {100 * entry['val_mAP_before']:.2f} before recovery -> "
        f"{100 * entry['val_mAP']:.2f} after; {entry['wall_s']} s"
    )


@main.command()
@click.argument("ckpt", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option(
    "--model", "name", help="Named size: needed for backbone-only checkpoints; checked otherwise."
)
@click.option(
    "--opentad-config",
    type=click.Path(dir_okay=False),
    help="The OpenTAD config the checkpoint was trained with (read, never executed).",
)
@click.option(
    "--preset",
    help="Instead of --opentad-config: a published OpenTAD config by name, e.g. "
    "adatad-thumos-videomae-s, adatad-anet-videomae-l (docs/opentad.md lists them).",
)
@click.option("--num-classes", type=int, help="Classes of the detector.")
@click.option("--classes", help="Comma-separated class names.")
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Leave out tensors with no place and initialise missing ones afresh (listed).",
)
@click.option(
    "--weights",
    type=click.Choice(["auto", "ema", "raw"]),
    default="auto",
    show_default=True,
    help="auto: state_dict_ema when the checkpoint has it (what OpenTAD evaluates).",
)
@click.option(
    "--lora-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="LongLoRA alpha for folding lora_*.A/B (1 in the official PBD code).",
)
@click.option("--heads", type=int, help="ViT attention heads, if no config says.")
@click.option("--head-heads", type=int, help="Projection attention heads, if no config says.")
@click.option("--attn-window", type=int, help="Projection attention window (-1 = global).")
@click.option(
    "--fps",
    type=float,
    help="Resample videos to this rate (backbone-only checkpoints and configs without OpenTAD's "
    "test pipeline; an OpenTAD THUMOS14 / ActivityNet config or preset sets its own sampling).",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@friendly
def convert(ckpt, out, name, opentad_config, preset, num_classes, classes, allow_partial, weights,
            lora_scale, heads, head_heads, attn_window, fps, force):  # fmt: skip
    """Import an OpenTAD / AdaTAD / official-PBD detector, or VideoMAE backbone weights.

    Strict: a tensor with no place, or a model tensor with no weights, is an error unless
    --allow-partial. See docs/opentad.md.

    \b
    Examples:
      pbd-deploy convert epoch_59.pth --opentad-config e2e_thumos_videomae_s_768x1_160_adapter.py \\
          --num-classes 20 --out vs/
      pbd-deploy convert videomae_s_k400.pth --model videomae-s --num-classes 20 \\
          --allow-partial --out vs/
    """
    from pbd_deploy.models.convert import ConvertConfig, convert_model_dir

    config = ConvertConfig(
        model=name,
        opentad_config=opentad_config,
        preset=preset,
        allow_partial=allow_partial,
        weights=weights,
        lora_scale=lora_scale,
        heads=heads,
        head_heads=head_heads,
        attn_window=attn_window,
        fps=fps,
    )
    conversion = convert_model_dir(ckpt, out, _class_names(num_classes, classes), config, force)
    lora = f", {conversion.folded_lora} LoRA pairs folded" if conversion.folded_lora else ""
    click.echo(
        f"mapped {conversion.mapped} {conversion.source_format} tensors "
        f"({conversion.weights}{lora}) into {out}"
    )
    for what, keys in (
        ("left out", conversion.unplaced),
        ("initialised afresh", conversion.reinitialised),
    ):
        if keys:
            more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
            click.echo(f"{what}: {len(keys)} tensors: {', '.join(keys[:5])}{more}", err=True)


@main.command()
@click.option(
    "--out",
    default="pbd-quickstart",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Working directory for data and models.",
)
@click.option("--epochs", type=int, **TRAIN)
@click.option("--force", is_flag=True, help="Start over if --out exists.")
@friendly
def quickstart(out, epochs, force):
    """The whole pipeline on the embedded default: synth, train, compress, export, eval.

    Trains videomae-tiny on a synthetic benchmark, drops a quarter of its blocks with
    Progressive Block Drop, exports the result to ONNX (+ build_engine.sh) and reports the
    test mAP of each step.

    \b
    Example:
      pbd-deploy quickstart --out pbd-quickstart/
    """
    from pbd_deploy.quickstart import QuickstartConfig, run_quickstart
    from pbd_deploy.train import TrainConfig

    config = QuickstartConfig(train=TrainConfig(epochs=epochs))
    with RichProgress() as progress:
        result = run_quickstart(out, config, force=force, progress=progress)
    summary = result.train
    click.echo(
        f"trained videomae-tiny in {summary['wall_s']:.0f} s "
        f"(best val average mAP {summary['best_val_mAP']:.4f})"
    )
    _echo_map("base", result.base)
    click.echo(
        f"compressed: kept blocks {result.compress['kept_blocks']}, "
        f"{result.backbone_macs_kept:.2f} of the backbone MACs"
    )
    _echo_map("compressed", result.small)
    onnx = result.out / "deploy" / "model.onnx"
    click.echo(f"exported {onnx}: test average mAP {100 * result.onnx_average_mAP:.2f}")


def _echo_map(name: str, result) -> None:
    maps = " ".join(f"{t:.1f}={100 * m:.2f}" for t, m in zip(result.thresholds, result.mAP))
    click.echo(f"{name} test mAP@{maps}; average {100 * result.average_mAP:.2f}")
