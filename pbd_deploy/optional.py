"""Import heavy optional dependencies lazily, naming the extra that provides them."""

import importlib

from pbd_deploy.errors import PbdError


def require(module: str, extra: str):
    """Import `module` or raise PbdError telling the user which extra to install.

    Example: `trt = require("tensorrt", "trt")`.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PbdError(
            f"{module} is not installed ({exc}); install it with: pip install 'pbd-deploy[{extra}]'"
        ) from None
