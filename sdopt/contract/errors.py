"""The one exception type the CLI turns into a single line on stderr and exit code 2."""


class SdoptError(Exception):
    """A user-facing error: bad input, a broken artifact, an unwritable path."""


def os_error_text(err: OSError, path=None) -> str:
    """An OSError as one line naming the path it concerns: "PATH: No space left on device"."""
    reason = err.strerror or type(err).__name__
    where = err.filename if err.filename is not None else path
    if where is None:
        return reason
    if isinstance(where, bytes):
        where = where.decode("utf-8", "replace")
    where = str(where)
    if len(where) > 160:  # a name too long to show whole
        where = where[:80] + "..." + where[-40:]
    return f"{where}: {reason}" + (f" (and {err.filename2})" if err.filename2 else "")
