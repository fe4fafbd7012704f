"""Calibration data: the UNet's inputs recorded along the fp32 pipeline's own sampling trajectories.

Each record is one UNet call exactly as the pipeline made it: the classifier-free-guidance batch
(unconditional and conditional halves), the timestep, the text embeddings (and SDXL's added
conditions), and its step in the trajectory. Seeded: the same source, prompts and config give the
same records, so they are cached on disk (``$SDOPT_CACHE/calibration``, default ``~/.cache/sdopt``)
keyed by the weights, prompts and recording settings.

Which recorded calls calibrate the quantizers is the ``sampling`` option:
``all`` steps; ``every`` k-th step (Q-Diffusion); ``normal``: steps drawn with probability from a
normal density around 0.4 T (PTQ4DM), half of each trajectory's steps; ``random-step``: one random
step, the same in every trajectory (the naive baseline: the inputs of one random timestep).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sdopt.errors import SdoptError
from sdopt.limits import MAX_SEED, MAX_SIDE, MAX_STEPS, check_image_size

# Generic prompts for models that bring no prompt set of their own.
GENERIC_PROMPTS = (
    "a photograph of an astronaut riding a horse",
    "a red sports car parked on a city street at night",
    "a bowl of fruit on a wooden table, oil painting",
    "a snowy mountain landscape at sunrise",
    "portrait of an old man with a beard, studio lighting",
    "a cat sleeping on a windowsill, watercolor",
    "a futuristic city skyline with flying cars",
    "a lighthouse on a cliff during a storm",
)

SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "dpmpp": "DPMSolverMultistepScheduler"}
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
    scheduler: str = "ddim"
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
        if self.scheduler not in SCHEDULERS:
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
        multiple = source.pipeline.vae_scale_factor * 2 ** (len(source.pipeline.unet.config.block_out_channels) - 1)
        check_image_size(config.size, config.size, multiple)


def calibration_prompts(source, config: CalibrationConfig) -> list[str]:
    pool = list(config.prompts) or list(builtin_prompts(source))
    return [pool[i % len(pool)] for i in range(config.num_prompts)]


def builtin_prompts(source) -> tuple[str, ...]:
    if source.family == "tiny-shapes":
        from sdopt.tinyshapes.grammar import calibration_prompts as tiny_prompts

        return tuple(tiny_prompts(64))
    return GENERIC_PROMPTS


def record_unet_inputs(source, config: CalibrationConfig, use_cache: bool = True) -> list[dict[str, torch.Tensor]]:
    """Every UNet call's inputs along the fp32 pipeline's trajectories of the calibration prompts
    (from the cache when the same weights, prompts and settings were recorded before)."""
    path = _cache_path(source, config) if use_cache else None
    if path is not None and path.is_file():
        try:
            return _load_records(path)
        except Exception as err:  # whatever damaged the cache file, the cure is to record again
            print(f"note: calibration cache {path} is unreadable ({type(err).__name__}: "
                  f"{str(err).splitlines()[0] if str(err) else ''}); recording it again", file=sys.stderr)
            path.unlink(missing_ok=True)
    records = _record(source, config)
    if path is not None:
        _save_records(path, records)
    return records


def select_calls(records: list[dict], config: CalibrationConfig) -> list[dict]:
    """The recorded calls the `sampling` option keeps (seeded)."""
    if config.sampling == "all":
        return list(records)
    if config.sampling == "every":
        return [r for r in records if int(r["step"]) % config.every == 0]
    rng = np.random.default_rng(config.seed)
    if config.sampling == "random-step":
        step = int(rng.integers(min(len(calls) for calls in _by_trajectory(records).values())))
        return [r for r in records if int(r["step"]) == step]
    chosen = []
    for calls in _by_trajectory(records).values():
        t = np.array([float(r["timestep"][0]) for r in calls]) / 1000.0
        weight = np.exp(-0.5 * ((t - NORMAL_MEAN) / NORMAL_STD) ** 2)
        picks = rng.choice(len(calls), size=max(1, len(calls) // 2), replace=False, p=weight / weight.sum())
        chosen += [calls[i] for i in sorted(picks)]
    return chosen


def _by_trajectory(records: list[dict]) -> dict[int, list[dict]]:
    trajectories: dict[int, list[dict]] = {}
    for r in records:
        trajectories.setdefault(int(r["trajectory"]), []).append(r)
    return trajectories


def _record(source, config: CalibrationConfig) -> list[dict[str, torch.Tensor]]:
    import diffusers

    pipe = source.pipeline
    records: list[dict[str, torch.Tensor]] = []
    position = {"trajectory": 0, "step": 0}

    def capture(_module, args, kwargs):
        sample, timestep = args[0], args[1]
        record = {
            "trajectory": torch.tensor(position["trajectory"]),
            "step": torch.tensor(position["step"]),
            "sample": sample.detach().clone(),
            "timestep": torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0]).clone(),
            "encoder_hidden_states": kwargs["encoder_hidden_states"].detach().clone(),
        }
        added = kwargs.get("added_cond_kwargs") or {}
        for key in ("text_embeds", "time_ids"):
            if key in added:
                record[key] = added[key].detach().clone().to(torch.float32)
        records.append(record)
        position["step"] += 1

    steps, guidance = trajectory_settings(source, config)
    size_h = config.size or source.height
    size_w = config.size or source.width
    original_scheduler = pipe.scheduler
    pipe.scheduler = getattr(diffusers, SCHEDULERS[config.scheduler]).from_config(original_scheduler.config)
    handle = pipe.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        prompts = calibration_prompts(source, config)
        for i, prompt in enumerate(tqdm(prompts, desc="calibration trajectories", unit="prompt")):
            position.update(trajectory=i, step=0)
            with torch.no_grad():
                pipe(prompt, num_inference_steps=steps, guidance_scale=guidance,
                     height=size_h, width=size_w, generator=torch.Generator().manual_seed(config.seed + i),
                     output_type="latent")
    finally:
        handle.remove()
        pipe.scheduler = original_scheduler
    return records


def trajectory_settings(source, config: CalibrationConfig) -> tuple[int, float]:
    """(steps, guidance) of the recorded trajectories: the config's, else the model's defaults."""
    return config.steps or source.steps, source.guidance if config.guidance is None else config.guidance


def _cache_path(source, config: CalibrationConfig) -> Path:
    import diffusers

    from sdopt import __version__

    digest = hashlib.sha256()
    for module in [source.pipeline.unet, *source.text_encoders]:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    settings = {key: asdict(config)[key] for key in _RECORDING_FIELDS}
    settings["steps"], settings["guidance"] = trajectory_settings(source, config)
    settings.update(prompts=calibration_prompts(source, config), height=source.height, width=source.width,
                    scheduler_config=dict(source.pipeline.scheduler.config), sdopt=__version__,
                    diffusers=diffusers.__version__, torch=torch.__version__)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    root = Path(os.environ.get("SDOPT_CACHE", Path.home() / ".cache" / "sdopt"))
    return root / "calibration" / f"{digest.hexdigest()[:24]}.safetensors"


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
    required = {"trajectory", "step", "sample", "timestep", "encoder_hidden_states"}
    if not records or any(not required <= set(r) for r in records):
        raise ValueError("records are incomplete")
    return records
