"""What every command shares: the `main` group, one-line errors, rich progress."""

from __future__ import annotations

import functools
import logging
import sys

import click

from pbd_deploy.errors import PbdError


def friendly(fn):
    """Turn PbdError into one line on stderr and exit code 2; anything else is a bug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PbdError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


class RichProgress:
    """A progress callback `(stage, done, total, **figures)` drawn as rich progress bars."""

    def __enter__(self):
        self.bars, self.tasks = None, {}
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
        if self.bars is None:
            self._start()
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(stage, total=total, figures="")
        text = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in figures.items()
            if k != "elapsed_s"
        )
        self.bars.update(self.tasks[stage], completed=done, total=total, figures=text)


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr)


PAST_END = click.option(
    "--past-end",
    type=click.Choice(["error", "keep", "drop"]),
    default="error",
    show_default=True,
    help="Segments ending after their video (THUMOS14 has 30): refuse, "
    "keep (undetectable misses) or drop them.",
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
