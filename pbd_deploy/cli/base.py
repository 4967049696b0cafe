"""What every command shares: the `main` group, one-line errors, rich progress."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import time

import click

from pbd_deploy.errors import PbdError

# What `pip install pbd-deploy` leaves out: the toolchain (train, compress, export) needs these.
TOOLCHAIN = ("torch", "peft", "safetensors", "onnx", "onnxslim", "onnxconverter_common",
             "onnxscript", "matplotlib")  # fmt: skip


def missing_toolchain(exc: ImportError) -> str | None:
    """The one-line message for a toolchain module that is not installed, else None."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name not in TOOLCHAIN:
        return None
    return (
        f"this command needs the toolchain ({name} is not installed); "
        "install it with: pip install 'pbd-deploy[full]'"
    )


def friendly(fn):
    """Turn PbdError into one line on stderr and exit code 2; anything else is a bug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PbdError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except ImportError as exc:
            if (line := missing_toolchain(exc)) is None:
                raise
            click.echo(f"error: {line}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


class RichProgress:
    """A progress callback `(stage, done, total, **figures)`: live rich progress bars on a
    terminal; in a log (stderr not a terminal: CI, a file, nohup) plain lines instead, one
    per epoch and one per finished stage, never truncated."""

    EPOCH_STAGES = ("epoch", "recover")  # one report per epoch: each gets its line

    def __enter__(self):
        self.bars, self.tasks, self.plain = None, {}, None
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        if self.bars is not None:
            self.bars.__exit__(*exc)

    def _start(self):
        # Started on the first report, so an error before any work prints only its one line.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[figures]}"),
            console=_console(),
        )
        self.bars.__enter__()

    def __call__(self, stage: str, done: int, total: int, **figures):
        if self.plain is None:
            self.plain = not _console().is_terminal
        text = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in figures.items()
            if k != "elapsed_s"
        )
        if self.plain:
            if done >= total or stage.split()[0] in self.EPOCH_STAGES:
                clock = f"[{time.monotonic() - self.started:7.1f}s]"
                click.echo(f"{clock} {stage} {done}/{total} {text}".rstrip(), err=True)
            return
        if self.bars is None:
            self._start()
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(stage, total=total, figures="")
        self.bars.update(self.tasks[stage], completed=done, total=total, figures=text)


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr)


class ConfigDefault(click.Option):
    """An option whose default is a field of a config dataclass, read only when needed.

    `ConfigDefault` options keep a command module free of heavy imports: `pbd-deploy --help`
    and the torch-free commands never import the toolchain module that holds the config,
    while `pbd-deploy train --help` still shows the config's real default.
    Use as `@click.option("--epochs", cls=ConfigDefault, config="pbd_deploy.train:TrainConfig")`.
    """

    def __init__(self, *args, config: str, **kwargs):
        super().__init__(*args, show_default=True, **kwargs)
        self.config = config

    def get_default(self, ctx, call=True):
        module, cls = self.config.split(":")
        try:
            config = getattr(importlib.import_module(module), cls)
        except ImportError as exc:
            if (line := missing_toolchain(exc)) is None:
                raise
            raise OneLineError(line) from None
        return getattr(config, self.name)


class OneLineError(click.ClickException):
    """Raised where `friendly` cannot catch (option defaults, help): same line, exit 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


PAST_END = click.option(
    "--past-end",
    type=click.Choice(["error", "keep", "drop"]),
    default="error",
    show_default=True,
    help="Segments ending after their video (THUMOS14 has 30): refuse, "
    "keep (undetectable misses) or drop them.",
)

SUBSETS = click.option(
    "--subsets",
    default="default",
    show_default=True,
    help="Split role of each annotation subset: default (training, validation, testing by "
    "name), opentad-thumos, opentad-anet, or SUBSET=ROLE pairs with roles train, val, test, "
    "train+val (15% held out as val) or none, e.g. training=train+val,validation=test.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pbd-deploy")
@click.option("-v", "--verbose", is_flag=True, help="Log library messages to stderr.")
def main(verbose):
    """Progressive Block Drop for temporal action detection: train, compress, export, bench.

    \b
    Example (everything on the embedded synthetic default):
      pbd-deploy quickstart
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def explicit(options: dict) -> dict:
    """The options given on the command line; the others keep their config's (or
    recipe's) values."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = {k: ctx.get_parameter_source(k) for k in options}
    return {k: v for k, v in options.items() if given[k] != ParameterSource.DEFAULT}
