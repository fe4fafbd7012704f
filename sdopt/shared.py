"""What compression, export and the torch-free runtime must agree on, defined once: scheduler names, the
image size rule, the timestep-interval formula, and the built-in prompt sets.

Torch-free (numpy only).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    """$SDOPT_CACHE (default ~/.cache/sdopt): calibration records, references, students, bench peers."""
    return Path(os.environ.get("SDOPT_CACHE", Path.home() / ".cache" / "sdopt"))


def source_key(spec: str, version: str, kind: str = "") -> str:
    """A cache key for what is made from a model source by one sdopt version (a folder source by its path)."""
    resolved = Path(spec).resolve() if Path(spec).exists() else ""
    return hashlib.sha256(f"{kind + '|' if kind else ''}{spec}|{resolved}|{version}".encode()).hexdigest()[:16]

# sdopt's scheduler names -> the diffusers classes the numpy schedulers reproduce
SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "dpmpp": "DPMSolverMultistepScheduler",
              "lcm": "LCMScheduler"}


def latent_size_multiple(unet_levels: int) -> int:
    """Latent height / width must be a multiple of this: one factor 2 per down-sampling level."""
    return 2 ** (unet_levels - 1)


def pixel_size_multiple(vae_scale_factor: int, latent_multiple: int) -> int:
    """Image height / width must be a multiple of this (and always of 8)."""
    return vae_scale_factor * latent_multiple


def interval_per_timestep(intervals: int, num_train_timesteps: int) -> np.float32:
    """K / T in float32: interval k of timestep t is clip(floor(t * K / T), 0, K - 1). Calibration, the
    exported graph and the TensorRT runtime all compute it with this constant in float32."""
    return np.float32(intervals / num_train_timesteps)


def interval_index(timesteps, intervals: int, per_timestep: float) -> np.ndarray:
    """Interval of each timestep: K equal slices of [0, T) (`per_timestep` = K / T)."""
    k = np.floor(np.asarray(timesteps, dtype=np.float32) * np.float32(per_timestep))
    return np.clip(k, 0, intervals - 1).astype(np.int64)


# Prompts for models that bring no prompt set of their own (calibration, eval).
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


PROMPT_POOL = 1024  # training prompts a reference family offers calibration and distillation (at most)


def calibration_prompt_pool(family: str, size: int = 64) -> tuple[str, ...]:
    """The built-in calibration prompts of a model family: up to `size` distinct training prompts of a reference
    family (a larger pool starts with the smaller one), or the generic set."""
    from sdopt.families import family as reference_family

    reference = reference_family(family)
    return tuple(reference.calibration_prompts(size)) if reference else GENERIC_PROMPTS


def consistency_timesteps(num_train_timesteps: int, schedule_steps: int) -> np.ndarray:
    """A latent consistency model's distillation schedule, ascending: every k-th training timestep,
    k = T // schedule_steps (diffusers' LCMScheduler and its distillation scripts)."""
    k = num_train_timesteps // schedule_steps
    return np.arange(1, schedule_steps + 1, dtype=np.int64) * k - 1


def consistency_scalings(timestep, timestep_scaling: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(c_skip, c_out) of the consistency function c_skip x_t + c_out x0 at `timestep` (float32): 1 and 0 at
    t = 0 (the boundary condition), nearly 0 and 1 a few timesteps later. sigma_data 0.5, as LCM."""
    sigma_data = np.float32(0.25)  # sigma_data squared
    scaled = np.asarray(timestep, np.float32) * np.float32(timestep_scaling)
    c_skip = sigma_data / (scaled**2 + sigma_data)
    c_out = scaled / np.sqrt(scaled**2 + sigma_data)
    return c_skip.astype(np.float32), c_out.astype(np.float32)


def guidance_embedding(guidance, dim: int) -> np.ndarray:
    """(N, dim) float32 sinusoidal embedding of guidance scales, the `timestep_cond` input of a UNet distilled
    with its guidance embedded (LCM): w = guidance - 1, scaled by 1000, as diffusers' pipelines compute it."""
    w = (np.asarray(guidance, dtype=np.float32).reshape(-1) - np.float32(1)) * np.float32(1000)
    half = dim // 2
    freqs = np.exp(np.arange(half, dtype=np.float32) * -np.float32(np.log(np.float32(10000)) / (half - 1)))
    angles = w[:, None] * freqs[None, :]
    emb = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    return np.pad(emb, ((0, 0), (0, dim % 2))).astype(np.float32)


def first_non_finite(module) -> str | None:
    """The name of a torch module's first parameter or floating buffer that holds NaN or Inf, or None."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not bool(tensor.detach().isfinite().all()):
            return name
    return None


def weights_key(modules, settings: dict) -> str:
    """A cache key: 24 hex digits of the sha256 of torch modules' weights (names and values) and the settings (as
    JSON), for anything computed from these weights with these settings."""
    import json

    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]
