"""`pbd-deploy`: parse options, call one library function, print the result. No logic here.

One module per group of commands; each registers itself on `main` when imported.
"""

from pbd_deploy.cli import commands  # noqa: F401  (registers the commands)
from pbd_deploy.cli.base import main

__all__ = ["main"]
