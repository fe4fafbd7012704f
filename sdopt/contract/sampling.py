"""What compression, export and the torch-free runtime must agree on about sampling, defined once: the
scheduler names, the image size rule, the timestep-interval formula, consistency-model scalings and the
guidance embedding. Torch-free (numpy only)."""

from __future__ import annotations

import numpy as np

# sdopt's scheduler names -> the diffusers classes the numpy schedulers reproduce
SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "dpmpp": "DPMSolverMultistepScheduler",
              "lcm": "LCMScheduler", "flow-euler": "FlowMatchEulerDiscreteScheduler"}
# the samplers of each scheduler family (a denoiser spec's `scheduler_family`): a model trained for one family
# runs only with its samplers
SCHEDULER_FAMILIES = {"ddpm": ("ddim", "euler", "dpmpp", "lcm"), "flow-matching": ("flow-euler",)}


def check_scheduler_family(name: str, family: str) -> None:
    """One error unless sampler `name` belongs to the model's scheduler family."""
    from sdopt.contract.errors import SdoptError

    if name not in SCHEDULER_FAMILIES.get(family, ()):
        raise SdoptError(f"scheduler {name} does not sample a {family} model; choose "
                         + " or ".join(SCHEDULER_FAMILIES.get(family, ())))


def latent_size_multiple(levels: int) -> int:
    """Latent height / width must be a multiple of this: one factor 2 per down-sampling level."""
    return 2 ** (levels - 1)


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


def image_position_ids(height: int, width: int) -> np.ndarray:
    """(height * width, 3) float32 position ids of a packed latent's patches (FLUX's rotary embedding reads them):
    0, row, column, as diffusers' FLUX pipeline makes them."""
    ids = np.zeros((height, width, 3), np.float32)
    ids[..., 1] += np.arange(height, dtype=np.float32)[:, None]
    ids[..., 2] += np.arange(width, dtype=np.float32)[None, :]
    return ids.reshape(height * width, 3)


def pack_latents(latents: np.ndarray) -> np.ndarray:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): 2x2 patches as tokens (diffusers' FLUX `_pack_latents`)."""
    b, c, h, w = latents.shape
    return latents.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2),
                                                                                         c * 4)


def unpack_latents(tokens: np.ndarray, height: int, width: int) -> np.ndarray:
    """The inverse of `pack_latents` for latents of `height` x `width`."""
    b, _, channels = tokens.shape
    return tokens.reshape(b, height // 2, width // 2, channels // 4, 2, 2).transpose(0, 3, 1, 4, 2, 5) \
        .reshape(b, channels // 4, height, width)
