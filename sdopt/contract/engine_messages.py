"""Engine failures as one line: what every backend raises its errors with."""

import re

_ALLOCATION = re.compile(r"(?:Failed to allocate memory for requested buffer of size|bad_alloc|"
                         r"[Oo]ut of memory|Cannot allocate memory)(?: (\d+))?")


def engine_message(err: BaseException) -> str:
    """One line of an engine's exception: an allocation failure as "out of memory", with the size asked for."""
    match = _ALLOCATION.search(str(err))
    if match:
        size = f" ({int(match.group(1)) / 2**30:.1f} GiB for one tensor)" if match.group(1) else ""
        return f"out of memory{size}: generate a smaller image (--height/--width)"
    return _engine_line(err)


def _engine_line(err: BaseException) -> str:
    """The line of an engine's exception that says what went wrong. ONNX Runtime puts it first, after
    "[ONNXRuntimeError] : N : CODE :"; OpenVINO stacks "Exception from src/...cpp:N:" and "Check ... failed"
    frames above it and puts it last."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if lines[0].startswith("[ONNXRuntimeError]"):
        text = lines[0].split(" : ", 3)[-1]
    else:
        frames = ("Exception from ", "Check '", "Loading input model")
        text = next((line for line in reversed(lines) if not line.startswith(frames)), lines[-1])
    return text if len(text) <= 300 else text[:297] + "..."
