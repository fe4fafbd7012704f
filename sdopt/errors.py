"""The one exception type the CLI turns into a single line on stderr and exit code 2."""


class SdoptError(Exception):
    """A user-facing error: bad input, a broken artifact, an unwritable path."""
