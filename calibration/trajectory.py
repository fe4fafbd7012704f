"""Calibration data: a model's inputs recorded along the fp32 pipeline's own sampling trajectories.

The pass that calibrates hands in a `CallTarget`: the module to record (for example the denoiser), how a
call's arguments become the exported graph's inputs, and how to run one trajectory. Each record is one
call exactly as the pipeline made it (for a denoiser: the classifier-free-guidance batch, the timestep, the
text embeddings), keyed by graph input names, with its trajectory and step. Seeded: the same weights,
prompts and config give the same records, so they are cached on disk (``$SDOPT_CACHE/calibration``,
default ``~/.cache/sdopt``).

Which recorded calls calibrate the quantizers is the ``sampling`` option:
``all`` steps; ``every`` k-th step (Q-Diffusion); ``normal``: steps drawn with probability from a
normal density around 0.4 T (PTQ4DM), half of each trajectory's steps; ``random-step``: one random
step, the same in every trajectory (the naive baseline: the inputs of one random timestep).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from sdopt.contract.cache import cache_root, weights_key
from sdopt.contract.errors import SdoptError
from sdopt.contract.limits import MAX_SEED, MAX_SIDE, MAX_STEPS, check_image_size
from sdopt.contract.sampling import SCHEDULERS
from sdopt.reference.prompts import PROMPT_POOL, calibration_prompt_pool

SAMPLINGS = ("all", "every", "normal", "random-step")
# PTQ4DM's normal around 0.4 T; the spread is ours (a fifth of the range)
NORMAL_MEAN, NORMAL_STD = 0.4, 0.2
# fields that change the recorded data (the others only select from it or use it)
_RECORDING_FIELDS = ("num_prompts", "steps", "guidance", "size", "scheduler", "seed")


@dataclass(frozen=True)
class CalibrationConfig:
    prompts: tuple[str, ...] = ()  # empty: the model's built-in calibration set
    num_prompts: int = 4
    steps: int = 0  # sampling steps of each recorded trajectory; 0: the model's own step count
    guidance: float | None = None  # None: the model's own guidance scale
    size: int = 0  # image height = width in pixels; 0: the model's default size
    scheduler: str = ""  # the trajectories' sampler; empty: the model's own (ddim, or lcm after the lcm pass)
    seed: int = 0
    sampling: str = "all"  # which recorded calls calibrate: see the module docstring
    every: int = 2  # for sampling "every"
    aggregation: str = "max"  # how per-call ranges become one scale: calibration.statistics
    percentile: float = 99.0  # for aggregation "percentile"
    fraction: float = 1.0  # for "min-mean" / "mean-max": share of the noisiest steps used
    intervals: int = 1  # > 1: one activation scale per timestep interval (exported as a table)

    def __post_init__(self):
        from sdopt.calibration.statistics import Aggregation

        Aggregation(self.aggregation, self.percentile, self.fraction)  # validates
        if self.sampling not in SAMPLINGS:
            raise SdoptError(f"unknown calibration sampling '{self.sampling}'; choose one of " + ", ".join(SAMPLINGS))
        if self.every < 1:
            raise SdoptError(f"calibration 'every' must be >= 1, got {self.every}")
        if self.intervals < 1:
            raise SdoptError(f"calibration intervals must be >= 1, got {self.intervals}")
        if self.num_prompts < 1:
            raise SdoptError("calibration needs at least one prompt")
        if self.steps < 0:
            raise SdoptError("calibration needs at least one sampling step")
        if self.scheduler and self.scheduler not in SCHEDULERS:
            raise SdoptError(f"unknown calibration scheduler '{self.scheduler}'; choose one of "
                             + ", ".join(SCHEDULERS))
        if self.size < 0 or self.size % 8:
            raise SdoptError(f"calibration size {self.size} is not a positive multiple of 8")
        if self.size > MAX_SIDE:
            raise SdoptError(f"calibration size {self.size} is over the limit of {MAX_SIDE} pixels")
        if self.steps > MAX_STEPS or self.intervals > MAX_STEPS:
            raise SdoptError(f"calibration steps and intervals must be <= {MAX_STEPS}")
        if self.guidance is not None and not math.isfinite(self.guidance):
            raise SdoptError(f"calibration guidance {self.guidance} is not a finite number")
        if not 0 <= self.seed <= MAX_SEED - self.num_prompts:
            raise SdoptError(f"calibration seed {self.seed} must lie in [0, {MAX_SEED} - num_prompts]")
        if any(not isinstance(p, str) or not p.strip() for p in self.prompts):
            raise SdoptError("calibration prompts must be non-empty strings")


def check_calibration(source, config: CalibrationConfig) -> None:
    """What the config needs of the loaded model, checked before any trajectory is recorded."""
    steps, _ = trajectory_settings(source, config)
    timesteps = int(source.pipeline.scheduler.config.num_train_timesteps)
    if steps > timesteps:
        raise SdoptError(f"calibration steps {steps}: the model's scheduler has {timesteps} timesteps")
    if config.intervals > steps:
        raise SdoptError(f"calibration intervals {config.intervals} > calibration steps {steps}: every interval "
                         f"needs calls to calibrate on")
    if config.sampling == "every" and config.every > steps:
        raise SdoptError(f"calibration every {config.every} > calibration steps {steps}: no step would be kept")
    available = len(config.prompts) or len(builtin_prompts(source))
    if config.num_prompts > available:
        raise SdoptError(f"calibration num_prompts {config.num_prompts}: only {available} prompts are available "
                         f"(give more with --calib-prompts)")
    if config.size:
        check_image_size(config.size, config.size, source.size_multiple)


def calibration_prompts(source, config: CalibrationConfig) -> list[str]:
    pool = list(config.prompts) or list(builtin_prompts(source))
    return [pool[i % len(pool)] for i in range(config.num_prompts)]


def builtin_prompts(source) -> tuple[str, ...]:
    return calibration_prompt_pool(source.family, PROMPT_POOL)


@dataclass(frozen=True)
class CallTarget:
    """What a pass hands calibration, owning how its model is called: the module whose calls are recorded,
    how a call's arguments become graph inputs (keyed by the exported graph's input names, so any graph
    calibrates the same way), and how to run one sampling trajectory of a prompt with a seed."""

    name: str  # keys the cache with the settings
    module: object  # torch.nn.Module
    inputs: Callable  # (args, kwargs) of a call -> {graph input name: tensor}
    run: Callable  # (prompt, seed) -> None: one trajectory, calling `module` once per step
    weights: tuple = ()  # modules whose weights the recorded inputs depend on


def record_calls(source, config: CalibrationConfig, target: CallTarget, use_cache: bool = True) -> list[dict]:
    """The inputs of every call of `target.module` along the trajectories of the calibration prompts, each
    with its trajectory and step (from the cache when the same weights, prompts and settings were recorded
    before)."""
    path = _cache_path(source, config, target) if use_cache else None
    if path is not None and path.is_file():
        try:
            return _load_records(path)
        except Exception as err:  # whatever damaged the cache file, the cure is to record again
            print(f"note: calibration cache {path} is unreadable ({type(err).__name__}: "
                  f"{str(err).splitlines()[0] if str(err) else ''}); recording it again", file=sys.stderr)
            path.unlink(missing_ok=True)
    records = _record(target, calibration_prompts(source, config), config.seed)
    if path is not None:
        _save_records(path, records)
    return records


def select_calls(records: list[dict], config: CalibrationConfig, *, timestep: str | None = None,
                 span: float | None = None) -> list[dict]:
    """The recorded calls the `sampling` option keeps (seeded). `timestep`: the input holding the call's timestep,
    `span`: the length of its domain (the backbone's `timestep_range`), that `normal` places 0.4 T in."""
    if config.sampling == "all":
        return list(records)
    if config.sampling == "every":
        return [r for r in records if int(r["step"]) % config.every == 0]
    rng = np.random.default_rng(config.seed)
    if config.sampling == "random-step":
        step = int(rng.integers(min(len(calls) for calls in _by_trajectory(records).values())))
        return [r for r in records if int(r["step"]) == step]
    if timestep is None or not span:
        raise ValueError("select_calls: `normal` sampling needs the timestep input and its domain's span")
    chosen = []
    for calls in _by_trajectory(records).values():
        t = np.array([float(r[timestep][0]) for r in calls]) / float(span)
        weight = np.exp(-0.5 * ((t - NORMAL_MEAN) / NORMAL_STD) ** 2)
        picks = rng.choice(len(calls), size=max(1, len(calls) // 2), replace=False, p=weight / weight.sum())
        chosen += [calls[i] for i in sorted(picks)]
    return chosen


def _by_trajectory(records: list[dict]) -> dict[int, list[dict]]:
    trajectories: dict[int, list[dict]] = {}
    for r in records:
        trajectories.setdefault(int(r["trajectory"]), []).append(r)
    return trajectories


def _record(target: CallTarget, prompts: list[str], seed: int) -> list[dict[str, torch.Tensor]]:
    records: list[dict[str, torch.Tensor]] = []
    position = {"trajectory": 0, "step": 0}

    def capture(_module, args, kwargs):
        inputs = {k: v.detach().clone() for k, v in target.inputs(args, kwargs).items()}
        records.append({"trajectory": torch.tensor(position["trajectory"]), "step": torch.tensor(position["step"]),
                        **inputs})
        position["step"] += 1

    handle = target.module.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        for i, prompt in enumerate(tqdm(prompts, desc="calibration trajectories", unit="prompt")):
            position.update(trajectory=i, step=0)
            with torch.no_grad():
                target.run(prompt, seed + i)
    finally:
        handle.remove()
    return records


def trajectory_settings(source, config: CalibrationConfig) -> tuple[int, float]:
    """(steps, guidance) of the recorded trajectories: the config's, else the model's defaults."""
    return config.steps or source.steps, source.guidance if config.guidance is None else config.guidance


def _cache_path(source, config: CalibrationConfig, target: CallTarget) -> Path:
    from importlib.metadata import version

    from sdopt.contract.version import __version__

    settings = {key: asdict(config)[key] for key in _RECORDING_FIELDS}
    settings["steps"], settings["guidance"] = trajectory_settings(source, config)
    settings["scheduler"] = config.scheduler or source.scheduler
    settings.update(target=target.name, prompts=calibration_prompts(source, config), height=source.height,
                    width=source.width, scheduler_config=dict(source.pipeline.scheduler.config), sdopt=__version__,
                    diffusers=version("diffusers"), torch=torch.__version__)
    return cache_root() / "calibration" / f"{weights_key(target.weights, settings)}.safetensors"


def _save_records(path: Path, records: list[dict]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{i}/{key}": value.contiguous() for i, record in enumerate(records) for key, value in record.items()}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"calls": str(len(records))})
    os.replace(tmp, path)


def _load_records(path: Path) -> list[dict]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    records: list[dict] = [{} for _ in range(len({name.split("/", 1)[0] for name in tensors}))]
    for name, value in tensors.items():
        index, key = name.split("/", 1)
        records[int(index)][key] = value
    if not records or any(set(r) != set(records[0]) or not {"trajectory", "step"} <= set(r) for r in records):
        raise ValueError("records are incomplete")
    return records
