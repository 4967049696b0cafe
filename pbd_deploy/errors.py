"""The one error type for user mistakes; the CLI prints it as one line and exits 2."""


class PbdError(Exception):
    """A problem with the user's input (file, option, data), not a bug in pbd-deploy."""
