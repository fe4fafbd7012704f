"""Command-line value types: each turns a flag's text into a value within sdopt's limits, or raises
argparse's error (one line, exit code 2). Used by the CLI and by the shortcuts passes declare."""

from __future__ import annotations

import argparse
import math

from sdopt.contract.limits import MAX_GUIDANCE, MAX_SEED, MAX_SIDE, MAX_STEPS, MAX_WORKSPACE_GIB, max_threads


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def image_side(text: str) -> int:
    value = integer(text)
    if value <= 0 or value % 8:
        raise argparse.ArgumentTypeError(f"{value} is not a positive multiple of 8")
    if value > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{value} is over the limit of {MAX_SIDE} pixels")
    return value


def positive(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def steps(text: str) -> int:
    value = positive(text)
    if value > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"{value} is over the limit of {MAX_STEPS} steps")
    return value


def bounded(low: int, high: int):
    """An integer type for the range [low, high]."""
    def parse(text: str) -> int:
        value = integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in [{low}, {high}]")
        return value
    return parse


seed = bounded(0, MAX_SEED)
vae_tile = bounded(0, MAX_SIDE)  # pixels; 0: no tiling (the model's multiple is checked against the artifact)


def threads(text: str) -> int:
    value = positive(text)
    if value > max_threads():
        raise argparse.ArgumentTypeError(f"{value} is more than this machine's {max_threads()} CPUs")
    return value


def guidance(text: str) -> float:
    value = finite(text)
    if abs(value) > MAX_GUIDANCE:
        raise argparse.ArgumentTypeError(f"{text} is over the limit of {MAX_GUIDANCE:g} in magnitude")
    return value


def workspace(text: str) -> float:
    value = finite(text)
    if not 0 < value <= MAX_WORKSPACE_GIB:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, {MAX_WORKSPACE_GIB:g}]")
    return value


def strength(text: str) -> float:
    value = finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 1]")
    return value


def unit_interval(text: str) -> float:
    value = finite(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return value


def key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value an int, a float or text, in that order of preference."""
    key, eq, raw = text.partition("=")
    if not eq or not key.strip() or not raw.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE")
    for kind in (int, float):
        try:
            value = kind(raw)
        except ValueError:
            continue
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text}: {raw} is not a finite number")
        return key.strip(), value
    return key.strip(), raw.strip()
