"""Euler discrete (Karras et al. 2022, no churn), as diffusers' EulerDiscreteScheduler (0.42.1)."""

from __future__ import annotations

import numpy as np

from sdopt.contract.prediction import from_sigma, x0_and_noise

from .base import (
    _COMMON_DEFAULTS,
    _COMMON_SUPPORTED,
    _NOT_SET,
    Scheduler,
    _f32,
    _sigmas,
    _spaced_timesteps,
)


class EulerScheduler(Scheduler):
    """Euler's method on the probability-flow ODE dx/dsigma = (x - x0) / sigma (Karras et al. 2022), no churn,
    in the variance-exploding parametrisation x = x_t / sqrt(abar_t), sigma = sqrt((1 - abar_t) / abar_t)."""

    _terminal_alpha_floor = 2.0**-24
    _defaults = {
        **_COMMON_DEFAULTS,
        "timestep_spacing": "linspace",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "timestep_type": "discrete",
        "final_sigmas_type": "zero",
    }
    _supported = {
        **_COMMON_SUPPORTED,
        "interpolation_type": ("linear",),
        "use_karras_sigmas": _NOT_SET,
        "use_exponential_sigmas": _NOT_SET,
        "use_beta_sigmas": _NOT_SET,
        "timestep_type": ("discrete",),
        "final_sigmas_type": ("zero", "sigma_min"),
    }

    def set_timesteps(self, num_inference_steps: int) -> None:
        super().set_timesteps(num_inference_steps)
        c = self.config
        self.timesteps = _spaced_timesteps(c, self.num_inference_steps).astype(np.float32)
        # "linspace" timesteps are fractional: sigmas are interpolated at their float32-rounded values
        self.sigmas = _sigmas(self.timesteps, self.alphas_cumprod, c["final_sigmas_type"])
        sigma_max = self.sigmas.max()
        # diffusers' rule: the initial noise has std sqrt(sigma_max^2 + 1) for "leading", sigma_max otherwise
        leading = c["timestep_spacing"] == "leading"
        self.init_noise_sigma = float(np.sqrt(sigma_max**2 + 1) if leading else sigma_max)

    def scale_model_input(self, sample, timestep):
        sigma = self.sigmas[self._index(timestep)]
        return _f32(sample) / np.sqrt(sigma**2 + 1)

    def step(self, model_output, timestep, sample):
        i = self._index(timestep)
        x, out = _f32(sample), _f32(model_output)
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        alpha, sigma_vp = from_sigma(sigma)
        x0, _ = x0_and_noise(self.config["prediction_type"], out, x * alpha, alpha, sigma_vp)
        d = (x - x0) / sigma
        self._step_index += 1
        return _f32(x + d * (sigma_next - sigma))

    def add_noise(self, original, noise, timestep):
        sigma = self.sigmas[self._position(timestep)]
        return _f32(_f32(original) + _f32(noise) * sigma)
