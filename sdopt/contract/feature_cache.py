"""Feature caching's part of the artifact contract: the shallow graph's role, the cached feature's name and
the schedule parameters the manifest carries, checked the same way where a pass writes them and where the
runtime reads them (`sdopt.runtime.caching` runs the schedules)."""

from __future__ import annotations

import math

from sdopt.contract.errors import SdoptError

SCHEDULES = ("uniform", "nonuniform", "adaptive")
SHALLOW_ROLE = "denoiser_shallow"
FEATURE = "cache_feature"
DEFAULTS = {"schedule": "uniform", "interval": 3, "threshold": 0.05, "pow": 1.4, "center": 15}
MAX_INTERVAL = 1000


def check_params(params: dict, where: str) -> dict:
    """The schedule parameters with defaults filled in, or one error naming the bad one."""
    if "branch" in params:
        raise SdoptError(f"{where}: the cache branch is fixed when the denoiser is split; compress again with "
                         f"--set cache.branch=N")
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise SdoptError(f"{where}: unknown option {unknown[0]!r}; known: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    if p["schedule"] not in SCHEDULES:
        raise SdoptError(f"{where}: schedule {p['schedule']!r}; choose one of {', '.join(SCHEDULES)}")
    for key, low in (("interval", 1), ("center", 0)):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or not low <= p[key] <= MAX_INTERVAL:
            raise SdoptError(f"{where}: {key} {p[key]!r} must be an integer in [{low}, {MAX_INTERVAL}]")
    for key, low, high in (("threshold", 0.0, 100.0), ("pow", 1.0, 10.0)):
        value = p[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low < value <= high:
            raise SdoptError(f"{where}: {key} {value!r} must be a number in ({low:g}, {high:g}]")
    return p
