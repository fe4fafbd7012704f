"""Flow-matching Euler (rectified flow: x_t = (1 - sigma) x0 + sigma noise, the model predicts the velocity
noise - x0), as diffusers' FlowMatchEulerDiscreteScheduler (0.39) computes it for SD3, SD3.5 and FLUX.1.

The schedule is sigma from about 1 down to 0 in `steps` points, shifted towards the noisy end: by the static
`shift` (SD3, SD3.5: 3.0) or, with `use_dynamic_shifting` (FLUX.1-dev), by `mu`, which the pipeline takes from
the image's token count (`dynamic_shift_mu`). The model's timestep is sigma * num_train_timesteps. Each step
is x + (sigma_next - sigma) * velocity. Arithmetic follows diffusers' dtypes (the float64 numpy parts, then
float32), so the sigmas agree bit for bit and trajectories to float32 rounding.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .base import Scheduler, SchedulerError, _f32


class FlowMatchEulerScheduler(Scheduler):
    _defaults = {
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": False,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "invert_sigmas": False,
        "shift_terminal": None,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "time_shift_type": "exponential",
        "stochastic_sampling": False,
    }
    _supported = {
        "invert_sigmas": (False,),
        "shift_terminal": (None, 0, 0.0),
        "use_karras_sigmas": (False,),
        "use_exponential_sigmas": (False,),
        "use_beta_sigmas": (False,),
        "time_shift_type": ("exponential", "linear"),
        "stochastic_sampling": (False,),
        "use_dynamic_shifting": (False, True),
    }

    def __init__(self, config: dict):
        self._read_config(config)  # no betas: the base class's noise schedule does not apply
        shift = self.config["shift"]
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not 0 < shift <= 1000:
            raise SchedulerError(f"scheduler config: shift {shift!r} must be a number in (0, 1000]")
        self.num_train_timesteps = int(self.config["num_train_timesteps"])
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None
        T = self.num_train_timesteps
        train = np.linspace(1, T, T, dtype=np.float32)[::-1] / np.float32(T)  # torch float32, as diffusers
        if not self.config["use_dynamic_shifting"]:
            train = self._static_shift(train)
        self.sigma_max, self.sigma_min = float(train[0]), float(train[-1])

    def _static_shift(self, sigmas: np.ndarray) -> np.ndarray:
        shift = self.config["shift"]
        return shift * sigmas / (1 + (shift - 1) * sigmas)

    def _time_shift(self, mu: float, sigmas: np.ndarray) -> np.ndarray:
        if self.config["time_shift_type"] == "exponential":
            return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)
        return mu / (mu + (1 / sigmas - 1) ** 1.0)

    def dynamic_shift_mu(self, image_seq_len: int) -> float:
        """The pipelines' `calculate_shift`: mu linear in the image's token count between the config's base and
        max sequence lengths."""
        c = self.config
        m = (c["max_shift"] - c["base_shift"]) / (c["max_image_seq_len"] - c["base_image_seq_len"])
        return image_seq_len * m + (c["base_shift"] - m * c["base_image_seq_len"])

    def set_timesteps(self, num_inference_steps: int, mu: float | None = None,
                      sigmas: np.ndarray | None = None) -> None:
        """`sigmas`: a pipeline's own (FLUX passes linspace(1, 1/steps, steps)); `mu`: the dynamic shift, which a
        config with `use_dynamic_shifting` needs."""
        n = operator.index(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise SchedulerError(f"num_inference_steps must be between 1 and num_train_timesteps="
                                 f"{self.num_train_timesteps}, got {n}")
        dynamic = self.config["use_dynamic_shifting"]
        if dynamic and (mu is None or not math.isfinite(mu)):
            raise SchedulerError("this flow-matching config shifts by the image size: give mu")
        if sigmas is None:
            T = self.num_train_timesteps
            sigmas = np.linspace(self.sigma_max * T, self.sigma_min * T, n) / T  # float64, as diffusers
        else:
            sigmas = np.asarray(sigmas).astype(np.float32)
            if sigmas.shape != (n,) or not np.all(sigmas > 0) or not np.all(sigmas <= 1):
                raise SchedulerError(f"custom sigmas must be {n} values in (0, 1]")
        sigmas = self._time_shift(mu, sigmas) if dynamic else self._static_shift(sigmas)
        sigmas = _f32(sigmas)
        self.timesteps = sigmas * np.float32(self.num_train_timesteps)
        self.sigmas = np.append(sigmas, np.float32(0)).astype(np.float32)
        self.num_inference_steps = n
        self._step_index = None

    def step(self, model_output, timestep, sample):
        i = self._index(timestep)
        dt = self.sigmas[i + 1] - self.sigmas[i]
        self._step_index += 1
        return _f32(_f32(sample) + dt * _f32(model_output))

    def add_noise(self, original, noise, timestep):
        """Flow noising (diffusers' `scale_noise`): sigma noise + (1 - sigma) x0 at `timestep`."""
        sigma = self.sigmas[self._position(timestep)]
        return _f32(sigma * _f32(noise) + (np.float32(1) - sigma) * _f32(original))

    def start_index(self, strength: float) -> int:
        """Where img2img begins, as the SD3 and FLUX img2img pipelines count it: int(steps - steps * strength)
        (strength unrounded, unlike the DDPM pipelines' int(steps * strength))."""
        self._require_timesteps()
        n = len(self.timesteps)
        return int(max(n - min(n * strength, n), 0))
