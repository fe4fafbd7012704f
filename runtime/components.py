"""The artifact's loaded graphs, by component name.

By default every graph is loaded when the pipeline is made and stays loaded. With `low_memory` a graph is
loaded when a stage first asks for it and released when the pipeline says that stage is done, so the text
encoder, the denoiser and the VAE decoder never sit in memory together: the peak is the largest stage's, not
the sum, at the cost of loading each graph once per generation.
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable


class Components:
    def __init__(self, names: list[str], load: Callable, low_memory: bool = False):
        """`load(name) -> model` loads and checks one graph."""
        self.names, self.load, self.low_memory = list(names), load, low_memory
        self.loaded: dict = {}
        self.wrappers: list[Callable] = []  # (name, model) -> model, applied to each graph as it is loaded
        if not low_memory:
            for name in self.names:
                self[name]

    def __getitem__(self, name: str):
        if name not in self.loaded:
            if name not in self.names:
                raise KeyError(name)
            model = self.load(name)
            for wrap in self.wrappers:
                model = wrap(name, model)
            self.loaded[name] = model
        return self.loaded[name]

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def items(self):
        """Every graph, loading those not loaded."""
        return [(name, self[name]) for name in self.names]

    def wrap(self, wrapper: Callable) -> None:
        """Apply `wrapper(name, model) -> model` to every graph, loaded now or later."""
        self.wrappers.append(wrapper)
        for name, model in self.loaded.items():
            self.loaded[name] = wrapper(name, model)

    def release(self, *names: str) -> None:
        """Low-memory mode: drop these graphs (their engine sessions and weights) until asked for again."""
        if not self.low_memory:
            return
        dropped = [self.loaded.pop(name) for name in names if name in self.loaded]
        if dropped:
            del dropped
            gc.collect()
            _return_freed_heap()


def available_memory() -> int | None:
    """Bytes of memory the system can give this process now (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library is another."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)  # the symbols the process already has
    except (OSError, TypeError):  # no dlopen(NULL) (Windows)
        return None


def _return_freed_heap() -> None:
    """glibc keeps freed heap pages for reuse; hand them back to the system so the next stage's peak does not
    sit on top of them (SD1.5 512², ONNX Runtime: 0.6 GB). A no-op where the C library is not glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
