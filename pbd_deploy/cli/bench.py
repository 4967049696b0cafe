"""`pbd-deploy bench MODEL...` (latency side by side) and `pbd-deploy bench gemm` (GEMM probe)."""

from __future__ import annotations

import click

from pbd_deploy.cli.base import RichProgress, _console, friendly, main


class _ModelsOrSubcommand(click.Group):
    """`bench gemm ...` runs the subcommand; `bench MODEL... [options]` runs `bench models`.

    A plain group would take the first model path for a subcommand name, so anything that is
    not a subcommand (or a request for the group's help) is routed to `models`.
    """

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["models", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_ModelsOrSubcommand)
def bench():
    """Benchmark models side by side, or probe GEMM efficiency.

    \b
    Examples:
      pbd-deploy bench base/ small/ deploy/model.onnx --backend torch --backend ort
      pbd-deploy bench base/ small/ --window 64 --threads 2 --iters 50 --json out.json
      pbd-deploy bench gemm --model videomae-s --drop 3 --tokens 800,3200
    """


@bench.command("models")
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    default=["torch"],
    show_default=True,
    help="torch, ort or trt; repeat for several.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--batch", default=1, show_default=True, help="Windows per call.")
@click.option("--window", type=int, help="Frames per window (model directories only).")
@click.option("--threads", type=int, help="CPU threads for torch and onnxruntime.")
@click.option("--warmup", default=20, show_default=True, help="Untimed calls per model.")
@click.option("--iters", default=200, show_default=True, help="Timed calls per model.")
@click.option("--fps", default=30.0, show_default=True, help="Frame rate if the model has none.")
@click.option(
    "--power/--no-power",
    default=True,
    show_default=True,
    help="Sample tegrastats / jtop for energy per window (Jetson only).",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG plot here.")
@friendly
def models(
    models, backends, device, batch, window, threads, warmup, iters, fps, power, json_out, plot
):
    """Latency, throughput, memory and MACs of MODELS; the first one is the baseline.

    MODELS are model directories, .onnx files or TensorRT .engine files.

    \b
    Example:
      pbd-deploy bench base/ small/ --backend torch --backend ort --window 64 --threads 2
    """
    from pbd_deploy.bench.config import BenchConfig
    from pbd_deploy.bench.report import rich_table, write_json, write_plot
    from pbd_deploy.bench.run import run_bench

    config = BenchConfig(
        backends=list(backends),
        device=device,
        batch=batch,
        window=window,
        threads=threads,
        warmup=warmup,
        iters=iters,
        fps=fps,
        power=power,
    )
    with RichProgress() as progress:
        result = run_bench(list(models), config, progress)
    _wide_console().print(rich_table(result))
    if json_out:
        click.echo(f"wrote {write_json(result, json_out)}")
    if plot:
        click.echo(f"wrote {write_plot(result, plot)}")


@bench.command()
@click.option("--model", default="videomae-s", show_default=True, help="Architecture name.")
@click.option("--drop", default=3, show_default=True, help="Blocks dropped; width matches MACs.")
@click.option("--tokens", default="800,1600,3200,6400", show_default=True, help="Rows M.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--dtype", help="float32 / float16 / bfloat16 (default: fp32 CPU, fp16 GPU).")
@click.option("--threads", type=int, help="CPU threads.")
@click.option("--warmup", default=3, show_default=True, help="Untimed calls per GEMM.")
@click.option("--iters", default=10, show_default=True)
@click.option("--attention", is_flag=True, help="Also time the attention matmuls.")
@click.option(
    "--backend",
    type=click.Choice(["torch", "trt", "ort-cuda", "ort-cpu"]),
    default="torch",
    show_default=True,
    help="torch.matmul, or one-MatMul ONNX graphs on TensorRT / ONNX Runtime.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@friendly
def gemm(model, drop, tokens, device, dtype, threads, warmup, iters, attention, backend, json_out):
    """Achieved FLOP/s of the block GEMMs at full width and narrowed to equal MACs.

    \b
    Example:
      pbd-deploy bench gemm --model videomae-s --drop 3 --tokens 800,3200 --threads 2
      pbd-deploy bench gemm --model videomae-s --backend trt --device cuda   # TensorRT
    """
    from pbd_deploy.bench.gemm import GemmConfig
    from pbd_deploy.bench.probe import probe_model
    from pbd_deploy.bench.report import gemm_table, write_json

    config = GemmConfig(
        device=device,
        dtype=dtype,
        tokens=_ints(tokens),
        warmup=warmup,
        iters=iters,
        threads=threads,
        attention=attention,
        backend=backend,
    )
    with RichProgress() as progress:
        result = probe_model(model, drop, config, progress)
    _wide_console().print(gemm_table(result))
    if json_out:
        click.echo(f"wrote {write_json(result, json_out)}")


def _wide_console():
    console = _console(stderr=False)
    if not console.is_terminal:  # piped or captured: do not squeeze 15 columns into 80
        console.width = 200
    return console


def _ints(text: str) -> list[int]:
    from pbd_deploy.errors import PbdError

    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise PbdError(f"--tokens must be comma-separated integers, not {text!r}") from None
