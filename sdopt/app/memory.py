"""Peak resident memory of this process, per stage.

Linux keeps a high-water mark of the resident set (VmHWM in /proc/self/status) and lets a process reset it to
the current size (writing 5 to /proc/self/clear_refs). `StagePeaks` resets it when a stage starts and reads it
when the stage ends, so each stage's peak is its own; the process's peak is the largest mark read.
"""

from __future__ import annotations

import resource
from collections import defaultdict
from contextlib import contextmanager

STATUS, CLEAR_REFS = "/proc/self/status", "/proc/self/clear_refs"


def high_water_mark() -> int | None:
    """VmHWM in bytes, or None where /proc does not give it."""
    try:
        with open(STATUS) as f:
            line = next((line for line in f if line.startswith("VmHWM:")), None)
    except OSError:
        return None
    return None if line is None else int(line.split()[1]) * 1024


def reset_high_water_mark() -> bool:
    try:
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class StagePeaks:
    """`with peaks.stage("unet"): ...` records the largest resident set seen inside the block. Stages do not
    nest. Where the kernel does not allow the reset, only the process's peak is known (`per_stage` is False)."""

    def __init__(self):
        self.peaks: dict[str, int] = defaultdict(int)
        # not ru_maxrss where VmHWM is known: it survives exec, so a process forked from a large one (a bench
        # worker of `sdopt bench`) would report its parent's size
        self.process_peak = high_water_mark() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.per_stage = high_water_mark() is not None

    def start(self) -> None:
        self.process_peak = max(self.process_peak, high_water_mark() or 0)
        self.per_stage = self.per_stage and reset_high_water_mark()

    def end(self, name: str) -> None:
        mark = high_water_mark() or 0
        self.process_peak = max(self.process_peak, mark)
        if self.per_stage:
            self.peaks[name] = max(self.peaks[name], mark)

    @contextmanager
    def stage(self, name: str):
        self.start()
        try:
            yield
        finally:
            self.end(name)

    def take(self) -> dict[str, int]:
        """The stages' peaks since the last take."""
        peaks, self.peaks = dict(self.peaks), defaultdict(int)
        return peaks

    def peak(self) -> int:
        return max(self.process_peak, high_water_mark() or 0)
