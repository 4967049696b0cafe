"""`pbd-deploy compress`: Progressive Block Drop with LoRA cross-depth alignment."""

from __future__ import annotations

import os

import click

from pbd_deploy.cli.base import PAST_END, SUBSETS, RichProgress, explicit, friendly, main
from pbd_deploy.compress.config import CRITERIA, LORA_TARGETS, BlockDropConfig, RecoveryConfig
from pbd_deploy.errors import PbdError

D = BlockDropConfig  # defaults shown in --help come from the config dataclass


def _indices(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise PbdError(f"--drop-indices takes comma-separated integers, e.g. 1,5,9; got {value!r}")


def recovery_options(fn):
    """The recovery options compress and prune share (their `RecoveryConfig` fields)."""
    R = RecoveryConfig
    options = [
        click.option("--batch-size", default=R.batch_size, show_default=True),
        click.option("--lr", default=R.lr, show_default=True),
        click.option("--weight-decay", default=R.weight_decay, show_default=True, help="AdamW."),
        click.option("--warmup-epochs", default=R.warmup_epochs, show_default=True,
                     help="Linear learning-rate warm-up before the cosine decay."),
        click.option("--windows-per-video", default=R.windows_per_video, show_default=True,
                     help="Training windows drawn per video and epoch."),
        click.option("--lora-rank", type=int, help="LoRA rank [default: width // 4]."),
        click.option("--lora-alpha", type=float, help="LoRA alpha [default: the rank]."),
        click.option("--lora-targets", default=",".join(LORA_TARGETS), show_default=True,
                     help="Linear layers of each block to adapt, e.g. attn.qkv,attn.proj,mlp.fc1."),
        click.option("--w-feat", default=R.w_feat, show_default=True, help="Cross-depth feature MSE."),
        click.option("--w-cls", default=R.w_cls, show_default=True, help="Class-score KL."),
        click.option("--w-reg", default=R.w_reg, show_default=True, help="Regression DIoU to teacher."),
        click.option("--temperature", default=R.temperature, show_default=True),
        click.option("--recipe", type=click.Choice(["quick", "paper"]), default="quick",
                     show_default=True,
                     help="Recovery preset: quick (CPU-sized) or paper (lr 1e-4, 60 epochs, 5 "
                     "warm-up, EMA, no decay on norms, drop path, augmentations); given options "
                     "override it."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run with the same options."),
        click.option("--device", default=R.device, show_default=True),
        click.option("--workers", default=R.workers, show_default=True,
                     help="Data loader processes for recovery and validation (0: none)."),
        click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
                     default=R.precision, show_default=True,
                     help="Recovery autocast precision (fp16: CUDA only)."),
        click.option("--checkpointing", is_flag=True, help="Recompute block activations in backward."),
        click.option("--seed", default=R.seed, show_default=True),
        PAST_END,
        SUBSETS,
        click.option("--force", is_flag=True, help="Replace OUT if it exists."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command()
@click.argument("model_dir", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Dataset directory.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--drop", type=int, help="Blocks to drop [default: depth // 4].")
@click.option("--target-macs", type=float, help="Drop blocks until this fraction of MACs is left.")
@click.option("--drop-indices", help="Drop exactly these original block indices (no scoring).")
@click.option("--one-shot", is_flag=True, help="Score once and drop the whole budget at once.")
@click.option("--criterion", type=click.Choice(CRITERIA), default=D.criterion, show_default=True)
@click.option("--calib-fraction", default=D.calib_fraction, show_default=True,
              help="Part of the training split used to score blocks.")  # fmt: skip
@click.option("--epochs", default=D.epochs, show_default=True,
              help="Recovery epochs per dropped block (0: no recovery).")  # fmt: skip
@recovery_options
@click.option("--max-map-drop", type=float,
              help="Stop, keeping the last good model, when val mAP falls more (0.01 = 1 point).")  # fmt: skip
@friendly
def compress(model_dir, data, out, drop_indices, one_shot, lora_targets, recipe, resume, force,
             **options):  # fmt: skip
    """Drop whole transformer blocks, recover with LoRA cross-depth alignment, merge.

    \b
    Examples:
      pbd-deploy compress base/ --data data/ --out small/            # depth // 4 blocks
      pbd-deploy compress base/ --data data/ --out small/ --target-macs 0.75
      pbd-deploy compress base/ --data data/ --out small/ --drop-indices 1,5,9
      torchrun --nproc_per_node 2 -m pbd_deploy compress base/ --data data/ --out small/
    """
    from pbd_deploy.compress.pbd import compress_model_dir

    config = BlockDropConfig.from_recipe(
        recipe,
        drop_indices=_indices(drop_indices),
        schedule="one-shot" if one_shot else "progressive",
        lora_targets=[t.strip() for t in lora_targets.split(",") if t.strip()],
        **explicit(options),
    )
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 draws and prints
    with RichProgress() as progress:
        report = compress_model_dir(
            model_dir, data, out, config, force, resume, progress if main_rank else None
        )
    if not main_rank:
        return
    base = report["baseline"]
    last = next((r for r in reversed(report["iterations"]) if r.get("kept")), base)
    click.echo(
        f"kept blocks {report['kept_blocks']}: {last['macs'] / base['macs']:.3f} of the MACs, "
        f"val average mAP {100 * base['val_mAP']:.2f} -> {100 * last['val_mAP']:.2f}; "
        f"saved to {out} (report.md inside)"
    )
    if report.get("stopped"):
        click.echo(f"stopped early: {report['stopped']}", err=True)
