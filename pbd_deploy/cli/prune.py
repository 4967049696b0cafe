"""`pbd-deploy prune`: remove attention heads and MLP units, recover like compress."""

from __future__ import annotations

import click

from pbd_deploy.cli.base import RichProgress, explicit, friendly, main
from pbd_deploy.cli.compress import recovery_options
from pbd_deploy.compress.config import IMPORTANCES, ChannelPruneConfig

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
@recovery_options
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
