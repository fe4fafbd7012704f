"""Per-timestep activation ranges and the scales made from them.

A diffusion denoiser's activation ranges move with the timestep, so the range of every activation
quantizer is recorded per denoiser call (each call is one sampling step of one calibration trajectory),
and the scales are chosen afterwards:

* ``max``: the largest range of any call (what a plain max calibrator does);
* ``percentile``: the given percentile of the per-call ranges (drops the rarest extreme calls);
* ``min-mean`` / ``mean-max``: ModelOpt's diffusion recipe. Per step of the trajectory the mean
  (resp. max) range over the calibration prompts, then over the first ``fraction`` of the steps
  (the noisiest first) the minimum (resp. mean) of those;
* intervals (TFMQ-DM's finite set calibration): K equal intervals of the training timesteps, each
  with its own scale, aggregated as above from the calls that fall into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdopt.contract import sampling
from sdopt.contract.errors import SdoptError

AGGREGATIONS = ("max", "percentile", "min-mean", "mean-max")


@dataclass(frozen=True)
class Aggregation:
    method: str = "max"
    percentile: float = 99.0  # for "percentile"
    fraction: float = 1.0  # for "min-mean" / "mean-max": share of the (noisiest) steps used

    def __post_init__(self):
        if self.method not in AGGREGATIONS:
            raise SdoptError(f"unknown aggregation '{self.method}'; choose one of " + ", ".join(AGGREGATIONS))
        if not 0 < self.percentile <= 100:
            raise SdoptError(f"percentile {self.percentile} must be in (0, 100]")
        if not 0 < self.fraction <= 1:
            raise SdoptError(f"fraction {self.fraction} must be in (0, 1]")


@dataclass
class RangeRecorder:
    """Records |x|.max() of every call of the given activation quantizers (modelopt TensorQuantizers),
    tagged with the call's timestep and trajectory step, through forward pre-hooks."""

    quantizers: dict  # name -> TensorQuantizer

    def __post_init__(self):
        self.timesteps: list[float] = []
        self.steps: list[int] = []
        self.amax: dict[str, list[float]] = {name: [] for name in self.quantizers}
        self._handles = []

    def __enter__(self):
        for name, quantizer in self.quantizers.items():
            self._handles.append(quantizer.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()

    def start_call(self, timestep: float, step: int) -> None:
        self.timesteps.append(float(timestep))
        self.steps.append(int(step))
        for values in self.amax.values():
            values.append(np.nan)  # a quantizer a call does not reach keeps NaN

    def _hook(self, name):
        def hook(quantizer, args):
            x = args[0].detach()
            if quantizer.pre_quant_scale is not None:  # SmoothQuant / AWQ: the quantizer sees x * scale
                x = x * quantizer.pre_quant_scale
            value = float(x.abs().amax())
            values = self.amax[name]
            values[-1] = value if np.isnan(values[-1]) else max(values[-1], value)
        return hook

    def statistics(self) -> StepStatistics:
        return StepStatistics(np.asarray(self.timesteps), np.asarray(self.steps),
                              {k: np.asarray(v) for k, v in self.amax.items()})


@dataclass(frozen=True)
class StepStatistics:
    timesteps: np.ndarray  # (calls,)
    steps: np.ndarray  # (calls,) index of the call in its trajectory, 0 = noisiest
    amax: dict  # quantizer name -> (calls,) range of each call

    def aggregate(self, aggregation: Aggregation, calls: np.ndarray | None = None) -> dict[str, float]:
        """One range per quantizer from the given calls (default: all)."""
        calls = np.arange(len(self.timesteps)) if calls is None else calls
        return {name: aggregate(values[calls], self.steps[calls], aggregation)
                for name, values in self.amax.items()}

    def interval_ranges(self, aggregation: Aggregation, intervals: int, num_train_timesteps: int) -> dict[str, np.ndarray]:
        """(intervals,) ranges per quantizer; an interval no call fell into takes the overall range."""
        index = interval_index(self.timesteps, intervals, num_train_timesteps)
        overall = self.aggregate(aggregation)
        table = {name: np.full(intervals, value, dtype=np.float64) for name, value in overall.items()}
        for k in range(intervals):
            calls = np.flatnonzero(index == k)
            if calls.size:
                for name, value in self.aggregate(aggregation, calls).items():
                    table[name][k] = value
        return table


def interval_index(timesteps, intervals: int, num_train_timesteps: int) -> np.ndarray:
    """Interval of each timestep: K equal slices of [0, T); the exported graph computes the same."""
    return sampling.interval_index(timesteps, intervals, sampling.interval_per_timestep(intervals, num_train_timesteps))


def aggregate(values: np.ndarray, steps: np.ndarray, aggregation: Aggregation) -> float:
    reached = ~np.isnan(values)
    values, steps = values[reached], steps[reached]
    if values.size == 0:
        return float("nan")
    method = aggregation.method
    if method == "max":
        return float(values.max())
    if method == "percentile":
        return float(np.percentile(values, aggregation.percentile))
    distinct = np.unique(steps)
    first = distinct[:max(1, int(len(distinct) * aggregation.fraction))]
    if method == "min-mean":
        return float(min(values[steps == s].mean() for s in first))
    return float(np.mean([values[steps == s].max() for s in first]))  # mean-max
