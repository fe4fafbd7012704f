"""DPM-Solver++(2M) (Lu et al. 2022), as diffusers' DPMSolverMultistepScheduler (0.42.1)."""

from __future__ import annotations

import math

import numpy as np

from sdopt.contract.prediction import x0_and_noise

from .base import (
    _COMMON_DEFAULTS,
    _COMMON_SUPPORTED,
    _NOT_SET,
    Scheduler,
    _f32,
    _sigmas,
)


def _alpha_sigma_lambda(sigma):
    """(alpha_t, sigma_t, lambda_t = log(alpha_t / sigma_t)) for the VE sigma = sigma_t / alpha_t."""
    alpha_t = 1 / np.sqrt(sigma**2 + 1)
    sigma_t = sigma * alpha_t
    with np.errstate(divide="ignore"):  # final sigma 0: lambda = +inf, exp(-h) = 0, as in diffusers
        return alpha_t, sigma_t, np.log(alpha_t) - np.log(sigma_t)


class DPMSolverPPScheduler(Scheduler):
    """DPM-Solver++ (Lu et al. 2022), multistep, data prediction: solver_order 2 is "2M" (midpoint or Heun
    correction from the previous x0); the first step and, by diffusers' rules, the last are first order."""

    _terminal_alpha_floor = 2.0**-24
    _defaults = {
        **_COMMON_DEFAULTS,
        "timestep_spacing": "linspace",
        "solver_order": 2,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": -math.inf,
        "thresholding": False,
        "variance_type": None,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "use_lu_lambdas": False,
        "use_flow_sigmas": False,
    }
    _supported = {
        **_COMMON_SUPPORTED,
        "solver_order": (1, 2),
        "algorithm_type": ("dpmsolver++",),
        # diffusers turns the solver types of DEIS (logrho) and UniPC (bh1, bh2) configs into midpoint
        "solver_type": ("midpoint", "heun", "logrho", "bh1", "bh2"),
        "final_sigmas_type": ("zero", "sigma_min"),
        "thresholding": _NOT_SET,
        "variance_type": (None,),
        "use_karras_sigmas": _NOT_SET,
        "use_exponential_sigmas": _NOT_SET,
        "use_beta_sigmas": _NOT_SET,
        "use_lu_lambdas": _NOT_SET,
        "use_flow_sigmas": _NOT_SET,
    }

    def set_timesteps(self, num_inference_steps: int) -> None:
        super().set_timesteps(num_inference_steps)
        c, T, n = self.config, self.num_train_timesteps, self.num_inference_steps
        ac = self.alphas_cumprod
        train_lambdas = np.log(np.sqrt(ac)) - np.log(np.sqrt(1 - ac))
        last = T - int(np.searchsorted(train_lambdas[::-1], np.float32(c["lambda_min_clipped"])))
        # n + 1 points with t = 0 dropped: unlike DDIM/Euler the final step goes to sigma 0 (or sigma_min)
        if c["timestep_spacing"] == "linspace":
            t = np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
        elif c["timestep_spacing"] == "leading":
            t = (np.arange(n + 1) * (last // (n + 1)))[::-1][:-1] + c["steps_offset"]
        else:
            t = np.arange(last, 0, -T / n).round() - 1
        self.timesteps = t.astype(np.int64)
        self.num_inference_steps = len(self.timesteps)
        self.sigmas = _sigmas(self.timesteps, ac, c["final_sigmas_type"])
        self._x0_preds: list[np.ndarray] = []  # the last two, newest last
        self._lower_order_nums = 0

    def step(self, model_output, timestep, sample):
        i = self._index(timestep, unknown_is_last=True)
        c, n = self.config, len(self.timesteps)
        x, out = _f32(sample), _f32(model_output)

        alpha_s0, sigma_s0, lambda_s0 = _alpha_sigma_lambda(self.sigmas[i])
        x0, _ = x0_and_noise(c["prediction_type"], out, x, alpha_s0, sigma_s0)
        self._x0_preds = [*self._x0_preds[-1:], x0]

        alpha_t, sigma_t, lambda_t = _alpha_sigma_lambda(self.sigmas[i + 1])
        h = lambda_t - lambda_s0
        phi = alpha_t * (np.exp(-h) - 1.0)  # alpha_t (e^{-h} - 1), shared by all terms
        # a final step to sigma 0 is always first order; to sigma_min only for short schedules (< 15 steps)
        final_first_order = i == n - 1 and (
            c["euler_at_final"] or (c["lower_order_final"] and n < 15) or c["final_sigmas_type"] == "zero"
        )
        if c["solver_order"] == 1 or self._lower_order_nums < 1 or final_first_order:
            prev = (sigma_t / sigma_s0) * x - phi * x0
        else:
            _, _, lambda_s1 = _alpha_sigma_lambda(self.sigmas[i - 1])
            m0, m1 = self._x0_preds[-1], self._x0_preds[-2]
            r0 = (lambda_s0 - lambda_s1) / h
            D0, D1 = m0, (1.0 / r0) * (m0 - m1)
            if c["solver_type"] == "heun":
                prev = (sigma_t / sigma_s0) * x - phi * D0 + (alpha_t * ((np.exp(-h) - 1.0) / h + 1.0)) * D1
            else:  # midpoint
                prev = (sigma_t / sigma_s0) * x - phi * D0 - 0.5 * phi * D1
        self._lower_order_nums = min(self._lower_order_nums + 1, c["solver_order"])
        self._step_index += 1
        return _f32(prev)

    def add_noise(self, original, noise, timestep):
        alpha_t, sigma_t, _ = _alpha_sigma_lambda(self.sigmas[self._position(timestep)])
        return _f32(alpha_t * _f32(original) + sigma_t * _f32(noise))
