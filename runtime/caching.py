"""Feature caching (DeepCache): the full graph on some steps, the shallow graph on the others, reusing the deep
feature the last full step left at the cache branch.

The artifact holds two denoiser graphs: the full graph (role `denoiser`), which also outputs `cache_feature`,
and the shallow path (role `denoiser_shallow`), which takes it as input. The guidance batch goes through both,
so the cached feature is kept per guidance branch. Which steps run the full graph:

    uniform     every `interval`-th step from the first (DeepCache's `cache_interval`)
    nonuniform  the same number of full steps, denser around step `center` (DeepCache's quadratic schedule)
    adaptive    decided while sampling: a full step once the model output has changed by `threshold` (relative,
                accumulated over the shallow steps since the last full one), or after `interval` steps

Torch-free.
"""

from __future__ import annotations

import math

import numpy as np

from sdopt.contract import interrupts
from sdopt.contract.errors import SdoptError
from sdopt.contract.feature_cache import FEATURE, SHALLOW_ROLE, check_params
from sdopt.contract.graphs import DENOISER

from .strategies import Strategy, advance, register


def full_steps(schedule: str, steps: int, interval: int, pow: float = 1.4, center: int = 15) -> list[int]:
    """Indices of the steps that run the full graph (fixed schedules)."""
    if interval == 1 or steps <= 1:
        return list(range(steps))
    if schedule == "uniform":
        return list(range(0, steps, interval))
    return quadratic_around_center(steps, math.ceil(steps / interval), min(center, steps - 1), pow)


def quadratic_around_center(steps: int, count: int, center: int, pow: float) -> list[int]:
    """`count` step indices from 0, spaced like |x|^pow around `center`: dense near it, sparse far from it.

    DeepCache's non-uniform schedule: `count + 1` points evenly spaced between the pow-th roots of -center and
    steps - center, raised back to the pow-th power, shifted by center; the first and last dropped, 0 added. The
    root of a negative number is the principal complex one and only the real part of the power is kept, as
    DeepCache computes it with numpy; where rounding merges indices the exponent is lowered by 0.02 and tried
    again."""
    while pow > 1:
        ends = [complex(-center) ** (1 / pow), complex(steps - center) ** (1 / pow)]
        points = np.linspace(ends[0], ends[1], count + 1) ** pow
        picked = np.unique(points.real.astype(np.int32))[1:-1]
        indices = [0] + [int(x) + center for x in picked]
        if len(indices) == count:
            return sorted(indices)
        pow = round(pow - 0.02, 10)
    raise SdoptError(f"the non-uniform schedule finds no {count} distinct full steps in {steps} around step "
                     f"{center}: lower center or raise interval")


def relative_change(new: np.ndarray, old: np.ndarray) -> float:
    return float(np.abs(new - old).mean() / (np.abs(old).mean() + 1e-12))


def feature_cache(denoiser, scheduler, latents, timesteps, step_hook=None, progress=None, params=None):
    """The denoise loop with the full / shallow graphs chosen by the schedule; counts land in denoiser.stats."""
    p = check_params(params or {}, "denoise")
    n = len(timesteps)
    fixed = None if p["schedule"] == "adaptive" else set(full_steps(p["schedule"], n, p["interval"], p["pow"],
                                                                    p["center"]))
    feature, previous, drift, since_full = None, None, 0.0, 0
    stats = {"full": 0, "shallow": 0}
    for i, t in enumerate(progress(timesteps) if progress else timesteps):
        interrupts.raise_if_interrupted()
        where = f"step {i + 1}/{n} (timestep {t})"
        if fixed is not None:
            full = i in fixed or feature is None
        else:
            full = feature is None or drift >= p["threshold"] or since_full >= p["interval"]
        if full:
            eps, outputs = denoiser.call(latents, t, where)
            feature, since_full = outputs[FEATURE], 1
        else:
            eps, _ = denoiser.call(latents, t, where, role=SHALLOW_ROLE, inputs={FEATURE: feature})
            since_full += 1
        change = 0.0 if previous is None else relative_change(eps, previous)
        drift, previous = 0.0 if full else drift + change, eps
        stats["full" if full else "shallow"] += 1
        latents = advance(scheduler, eps, t, latents, i, where, step_hook)
    denoiser.stats = stats
    return latents


register("feature_cache", Strategy(feature_cache, (SHALLOW_ROLE,), check_params,
                                   ((DENOISER, "outputs", FEATURE), (SHALLOW_ROLE, "inputs", FEATURE))))
