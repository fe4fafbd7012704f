"""The registry of denoise strategies: how the denoiser graph(s) are called across the sampling steps.

A strategy is `loop(denoiser, scheduler, latents, timesteps, step_hook, progress, params) -> latents` over a
denoiser behind its guidance (`denoise.GuidedDenoiser`). Each strategy module registers itself here (`plain` in
`denoise`, `feature_cache` in `caching`); the manifest names the strategy and its parameters
(`pipeline.denoise`). This module imports no strategy, so none of them forms an import cycle with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sdopt.contract.errors import SdoptError


@dataclass(frozen=True)
class Strategy:
    loop: Callable
    roles: tuple = ()  # further denoiser roles the loop calls
    check: Callable | None = None  # (params, where) -> params with defaults; None: it takes no parameters
    io: tuple = ()  # (role, "inputs" | "outputs", name): what the loop feeds or reads beyond the plain denoiser's


_REGISTRY: dict[str, Strategy] = {}


def register(name: str, strategy: Strategy) -> None:
    _REGISTRY[name] = strategy


def registered() -> dict[str, Strategy]:
    return dict(_REGISTRY)


def require_finite(outputs: dict, component: str, where: str) -> None:
    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise SdoptError(f"{where}: {component} produced non-finite values (NaN or Inf) in {name}; "
                             f"no image was made")


def advance(scheduler, eps: np.ndarray, t, latents: np.ndarray, i: int, where: str, step_hook=None) -> np.ndarray:
    """One scheduler step from the guided prediction, checked, then the step hook."""
    latents = scheduler.step(eps, t, latents).astype(np.float32)
    require_finite({"latents": latents}, "the scheduler", where)
    return latents if step_hook is None else step_hook(latents, i)


def strategy(spec: dict, overrides: dict | None = None) -> tuple[str, Strategy, dict]:
    """The manifest's `denoise` entry as (name, strategy, checked parameters); `overrides` (`--denoise KEY=VALUE`)
    may name another strategy (`strategy=plain`: the full denoiser every step) or change parameters."""
    overrides = dict(overrides or {})
    name = overrides.pop("strategy", spec["strategy"])
    if name not in _REGISTRY:
        raise SdoptError(f"denoise strategy '{name}' is unknown to this runtime; it knows " + ", ".join(_REGISTRY))
    chosen = _REGISTRY[name]
    stored = spec.get("params", {})
    if not isinstance(stored, dict):
        raise SdoptError(f"denoise strategy {spec['strategy']}: its params must be a mapping")
    params = {**stored, **overrides} if name == spec["strategy"] else overrides
    if chosen.check is None:
        if params:
            raise SdoptError(f"denoise strategy {name} takes no parameters ({', '.join(params)} given)")
        return name, chosen, {}
    return name, chosen, chosen.check(params, f"denoise strategy {name}")
