"""Latent consistency sampling (Luo et al. 2023), as diffusers' LCMScheduler (0.42.1).

Each step maps the sample to the consistency model's x0 estimate (the boundary-condition mix
c_skip x_t + c_out x0); all but the last step then noise it afresh to the next timestep. The fresh noise
comes from `noise(shape)`, which the caller seeds (`seed_noise`).
"""

from __future__ import annotations

import numpy as np

from sdopt.contract.prediction import x0_and_noise
from sdopt.contract.sampling import consistency_scalings, consistency_timesteps

from .base import _COMMON_DEFAULTS, _COMMON_SUPPORTED, _NOT_SET, Scheduler, _f32


class LCMScheduler(Scheduler):
    _defaults = {
        **_COMMON_DEFAULTS,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "original_inference_steps": 50,
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "thresholding": False,
        "timestep_scaling": 10.0,
        "timestep_spacing": "leading",  # read by diffusers' LCMScheduler but unused: its schedule is its own
    }
    _supported = {**_COMMON_SUPPORTED, "thresholding": _NOT_SET}

    def __init__(self, config: dict):
        super().__init__(config)
        one = self.config["set_alpha_to_one"]
        self.final_alpha_cumprod = np.float32(1.0) if one else self.alphas_cumprod[0]
        self._rng = np.random.default_rng(0)

    def seed_noise(self, seed) -> None:
        self._rng = np.random.default_rng(seed)

    def noise(self, shape) -> np.ndarray:
        return self._rng.standard_normal(shape).astype(np.float32)

    def set_timesteps(self, num_inference_steps: int) -> None:
        from .base import SchedulerError

        super().set_timesteps(num_inference_steps)
        original = int(self.config["original_inference_steps"])
        if not 1 <= original <= self.num_train_timesteps:
            raise SchedulerError(f"LCMScheduler: original_inference_steps {original} must lie in "
                                 f"[1, {self.num_train_timesteps}]")
        if self.num_inference_steps > original:
            raise SchedulerError(f"LCMScheduler: {self.num_inference_steps} steps, more than the "
                                 f"{original} of its distillation schedule")
        schedule = consistency_timesteps(self.num_train_timesteps, original)[::-1]
        picks = np.floor(np.linspace(0, len(schedule), num=self.num_inference_steps, endpoint=False)).astype(np.int64)
        self.timesteps = schedule[picks].copy()

    def step(self, model_output, timestep, sample, noise: np.ndarray | None = None):
        """The next sample; `noise` (for the re-noising of all but the last step) defaults to `self.noise`."""
        i = self._index(timestep)
        x, out = _f32(sample), _f32(model_output)
        t = int(timestep)
        prev = int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else t
        abar_t = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        c_skip, c_out = consistency_scalings(t, self.config["timestep_scaling"])
        x0, _ = x0_and_noise(self.config["prediction_type"], out, x, np.sqrt(abar_t), np.sqrt(1 - abar_t))
        if self.config["clip_sample"]:
            r = self.config["clip_sample_range"]
            x0 = np.clip(x0, -r, r)
        denoised = _f32(c_out * x0 + c_skip * x)
        self._step_index = i + 1
        if i == self.num_inference_steps - 1:
            return denoised
        noise = self.noise(denoised.shape) if noise is None else _f32(noise)
        return _f32(np.sqrt(abar_prev) * denoised + np.sqrt(1 - abar_prev) * noise)

    def add_noise(self, original, noise, timestep):
        abar = self.alphas_cumprod[int(timestep)]
        return _f32(np.sqrt(abar) * _f32(original) + np.sqrt(1 - abar) * _f32(noise))
