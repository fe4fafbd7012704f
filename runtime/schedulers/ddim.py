"""DDIM (Song et al. 2021) with eta = 0, as diffusers' DDIMScheduler (0.42.1)."""

from __future__ import annotations

import numpy as np

from sdopt.contract.prediction import x0_and_noise

from .base import (
    _COMMON_DEFAULTS,
    _COMMON_SUPPORTED,
    _NOT_SET,
    Scheduler,
    _f32,
    _spaced_timesteps,
)


class DDIMScheduler(Scheduler):
    """DDIM (Song et al. 2021) with eta = 0: x_{t-1} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps."""

    _defaults = {
        **_COMMON_DEFAULTS,
        "timestep_spacing": "leading",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "thresholding": False,
    }
    _supported = {**_COMMON_SUPPORTED, "thresholding": _NOT_SET}

    def __init__(self, config: dict):
        super().__init__(config)
        one = self.config["set_alpha_to_one"]
        self.final_alpha_cumprod = np.float32(1.0) if one else self.alphas_cumprod[0]

    def set_timesteps(self, num_inference_steps: int) -> None:
        super().set_timesteps(num_inference_steps)
        self.timesteps = _spaced_timesteps(self.config, self.num_inference_steps).round().astype(np.int64)

    def step(self, model_output, timestep, sample):
        self._require_timesteps()
        x, out = _f32(sample), _f32(model_output)
        t = int(timestep)
        # diffusers steps back by T // n whatever the spacing (so also for "trailing" and "linspace")
        t_prev = t - self.num_train_timesteps // self.num_inference_steps
        abar_t = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else self.final_alpha_cumprod
        sqrt_abar, sqrt_1m_abar = np.sqrt(abar_t), np.sqrt(1 - abar_t)

        x0, eps = x0_and_noise(self.config["prediction_type"], out, x, sqrt_abar, sqrt_1m_abar)
        if self.config["clip_sample"]:
            r = self.config["clip_sample_range"]
            x0 = np.clip(x0, -r, r)  # eps is deliberately not recomputed from the clipped x0, as in diffusers
        return _f32(np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps)

    def add_noise(self, original, noise, timestep):
        abar = self.alphas_cumprod[int(timestep)]
        return _f32(np.sqrt(abar) * _f32(original) + np.sqrt(1 - abar) * _f32(noise))
