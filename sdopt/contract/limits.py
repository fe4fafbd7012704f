"""The documented limits of what sdopt accepts, checked before any work starts (docs/guarantees.md: Limits).

Torch-free: the CLI and the runtime both check against these.
"""

from __future__ import annotations

import math
import os

from sdopt.contract.errors import SdoptError

MAX_SIDE = 4096  # pixels, either side of an image
MAX_PIXELS = 2048 * 2048  # pixels of one image (height x width)
MAX_SEED = 2**32 - 1  # seeds are 32-bit unsigned, as most SD front ends use
MAX_STEPS = 1000  # and never more than the scheduler's training timesteps
MAX_MANIFEST_BYTES = 16 << 20
MAX_TEXT_FILE_BYTES = 16 << 20  # prompts files, recipes, configs read from the user
MAX_PROMPT_CHARS = 10_000
MAX_GUIDANCE = 100.0  # |guidance scale|
MAX_RUNS = 1000  # bench: timed generations per target
MAX_WARMUP = 100  # bench: warm-up generations
MAX_EVAL_SEEDS = 64  # eval: seeds per prompt (64 x N held-out pairs for the reference models)
MAX_WORKSPACE_GIB = 1024.0  # tensorrt builder workspace


def max_threads() -> int:
    """Engine threads: at most this machine's CPUs (more only oversubscribe them; thousands hang the engines)."""
    return os.cpu_count() or 1


def check_image_size(height: int, width: int, multiple: int = 8) -> None:
    for name, value in (("height", height), ("width", width)):
        if value < multiple or value % multiple:
            raise SdoptError(f"{name} {value} is not a positive multiple of {multiple} "
                             f"(this model needs multiples of {multiple} pixels; and always of 8)")
        if value > MAX_SIDE:
            raise SdoptError(f"{name} {value} is over the limit of {MAX_SIDE} pixels")
    if height * width > MAX_PIXELS:
        raise SdoptError(f"{height}x{width} is {height * width:,} pixels, over the limit of {MAX_PIXELS:,} "
                         f"(2048x2048) per image")


def check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or not 1 <= threads <= max_threads()):
        raise SdoptError(f"threads {threads!r} must be an integer in [1, {max_threads()}] (this machine's CPUs)")


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SdoptError(f"seed {seed!r} must be an integer in [0, {MAX_SEED}]")


def check_guidance(guidance: float) -> None:
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
            or abs(guidance) > MAX_GUIDANCE:
        raise SdoptError(f"guidance {guidance!r} must be a number in [-{MAX_GUIDANCE:g}, {MAX_GUIDANCE:g}]")


def check_count(value, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SdoptError(f"{what} {value!r} must be an integer in [{low}, {high}]")


def check_text(text: str, what: str) -> None:
    """Text that the tokenizer will see: valid Unicode (no undecodable bytes from the command line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SdoptError(f"{what} is not valid UTF-8 text") from None
    if len(text) > MAX_PROMPT_CHARS:
        raise SdoptError(f"{what} is longer than {MAX_PROMPT_CHARS} characters")
