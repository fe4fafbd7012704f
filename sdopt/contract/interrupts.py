"""Ctrl-C (SIGINT) and SIGTERM end a command with nothing written, wherever they arrive.

Python raises KeyboardInterrupt in whatever frame runs when the signal comes; inside a finalizer
(`__del__`, common while large libraries import) it is printed as "Exception ignored" and lost. So the
handler also records the signal, every commit point (`raise_if_interrupted`, called before anything is
renamed into place) raises again, and the CLI's exit code says 130 even if every raise was swallowed.
"""

from __future__ import annotations

import signal

_received: list[int] = []


def install() -> dict:
    """Handle SIGINT and SIGTERM from now on, forgetting signals of an earlier command in this process.
    Returns the handlers it replaced, for `restore`."""
    _received.clear()
    return {signum: signal.signal(signum, _handler) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _handler(signum, _frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def interrupted() -> bool:
    return bool(_received)


def exit_code() -> int:
    """128 + the signal's number, as shells report it (130 for Ctrl-C)."""
    return 128 + (_received[0] if _received else signal.SIGINT)


def raise_if_interrupted() -> None:
    if _received:
        raise KeyboardInterrupt
