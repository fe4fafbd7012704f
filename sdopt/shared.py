"""What compression, export and the torch-free runtime must agree on, defined once: scheduler names, the
image size rule, the timestep-interval formula, and the built-in prompt sets.

Torch-free (numpy only).
"""

from __future__ import annotations

import numpy as np

# sdopt's scheduler names -> the diffusers classes the numpy schedulers reproduce
SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "dpmpp": "DPMSolverMultistepScheduler"}


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


def calibration_prompt_pool(family: str) -> tuple[str, ...]:
    """The built-in calibration prompts of a model family."""
    if family == "tiny-shapes":
        from sdopt.tinyshapes.grammar import calibration_prompts

        return tuple(calibration_prompts(64))
    return GENERIC_PROMPTS
