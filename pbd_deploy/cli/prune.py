"""`pbd-deploy prune`: remove attention heads and MLP units, recover like compress."""

from __future__ import annotations

import click

from pbd_deploy.cli.base import PAST_END, RichProgress, explicit, friendly, main
from pbd_deploy.compress.config import IMPORTANCES, LORA_TARGETS, ChannelPruneConfig

D = ChannelPruneConfig  # defaults shown in --help come from the config dataclass


@main.command()
@click.argument("model_dir", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Dataset directory.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--target-macs", type=float, help="Prune until this fraction of the MACs is left.")
@click.option("--heads", type=int, help="Attention heads kept per block (average if global).")
@click.option("--mlp-ratio", type=float,
              help="MLP hidden units kept per block = width * ratio (average if global).")  # fmt: skip
@click.option("--uniform", is_flag=True,
              help="The same widths in every block [default: allocated across blocks by importance].")  # fmt: skip
@click.option("--importance", default=D.importance, show_default=True,
              help=f"Torch-Pruning estimator: {', '.join(IMPORTANCES)}.")  # fmt: skip
@click.option("--calib-windows", default=D.calib_windows, show_default=True,
              help="Calibration windows for the Taylor / Hessian gradients.")  # fmt: skip
@click.option("--calib-fraction", default=D.calib_fraction, show_default=True,
              help="Part of the training split used to score channels.")  # fmt: skip
@click.option("--epochs", default=D.epochs, show_default=True,
              help="Recovery epochs (0: no recovery).")  # fmt: skip
@click.option("--batch-size", default=D.batch_size, show_default=True)
@click.option("--lr", default=D.lr, show_default=True)
@click.option("--weight-decay", default=D.weight_decay, show_default=True, help="AdamW.")
@click.option("--warmup-epochs", default=D.warmup_epochs, show_default=True,
              help="Linear learning-rate warm-up before the cosine decay.")  # fmt: skip
@click.option("--windows-per-video", default=D.windows_per_video, show_default=True,
              help="Training windows drawn per video and epoch.")  # fmt: skip
@click.option("--lora-rank", type=int, help="LoRA rank [default: width // 4].")
@click.option("--lora-alpha", type=float, help="LoRA alpha [default: the rank].")
@click.option("--lora-targets", default=",".join(LORA_TARGETS), show_default=True,
              help="Linear layers of each block to adapt, e.g. attn.qkv,attn.proj,mlp.fc1.")  # fmt: skip
@click.option("--w-feat", default=D.w_feat, show_default=True, help="Cross-depth feature MSE.")
@click.option("--w-cls", default=D.w_cls, show_default=True, help="Class-score KL.")
@click.option("--w-reg", default=D.w_reg, show_default=True, help="Regression DIoU to teacher.")
@click.option("--temperature", default=D.temperature, show_default=True)
@click.option("--recipe", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
              help="Recovery preset: quick (CPU-sized) or paper (lr 1e-4, 60 epochs, 5 warm-up, "
              "EMA, no decay on norms, drop path, augmentations); given options override it.")  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue an interrupted run with the same options.")
@click.option("--device", default=D.device, show_default=True)
@click.option("--workers", default=D.workers, show_default=True,
              help="Data loader processes for recovery and validation (0: none).")  # fmt: skip
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=D.precision,
              show_default=True, help="Recovery autocast precision (fp16: CUDA only).")  # fmt: skip
@click.option("--checkpointing", is_flag=True, help="Recompute block activations in backward.")
@click.option("--seed", default=D.seed, show_default=True)
@PAST_END
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@friendly
def prune(model_dir, data, out, importance, lora_targets, recipe, resume, force, **options):
    """Remove attention heads and MLP hidden units of the kept blocks, then recover.

    \b
    Examples:
      pbd-deploy prune small/ --data data/ --out smaller/ --target-macs 0.8
      pbd-deploy prune base/ --data data/ --out narrow/ --heads 3 --mlp-ratio 3 --uniform
      pbd-deploy prune base/ --data data/ --out narrow/ --target-macs 0.75 --importance hessian
    """
    from pbd_deploy.compress.channels import prune_model_dir

    config = ChannelPruneConfig.from_recipe(
        recipe,
        importance=importance,
        lora_targets=[t.strip() for t in lora_targets.split(",") if t.strip()],
        **explicit(options),
    )
    with RichProgress() as progress:
        report = prune_model_dir(model_dir, data, out, config, force, resume, progress)
    base, r = report["baseline"], report["prune"]
    click.echo(
        f"heads per block {r['block_heads']}, MLP units {r['mlp_dims']}: "
        f"{r['macs'] / base['macs']:.3f} of the MACs, val average mAP "
        f"{100 * base['val_mAP']:.2f} -> {100 * r['val_mAP']:.2f}; saved to {out} "
        "(report.md inside)"
    )
