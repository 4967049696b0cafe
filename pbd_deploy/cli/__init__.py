"""`pbd-deploy`: parse options, call one library function, print the result. No logic here.

One module per group of commands; each registers itself on `main` when imported.
"""

from pbd_deploy.cli import (
    bench,  # noqa: F401
    commands,  # noqa: F401  (registers the commands)
    compress,  # noqa: F401
    export,  # noqa: F401
    prune,  # noqa: F401
)
from pbd_deploy.cli.base import main

__all__ = ["main"]
