"""What the numpy schedulers share: diffusers' config handling and defaults, the beta schedules (bit-exact
float32), timestep spacing, sigmas, the conversion of a model prediction into x0, and the step state.

All arithmetic is float32 where diffusers computes in float32, in the same order, so trajectories agree
with diffusers to a few float32 ulps. Inputs of any float dtype are upcast; outputs are float32.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from sdopt.contract.errors import SdoptError


class SchedulerError(SdoptError, ValueError):
    """A config or call the numpy schedulers cannot honour."""


_COMMON_DEFAULTS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
}
_COMMON_SUPPORTED = {
    "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "timestep_spacing": ("leading", "trailing", "linspace"),
    "rescale_betas_zero_snr": (False, True),
}
_NOT_SET = (False, None)  # boolean options that are off


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _linspace_f32(start: float, stop: float, num: int) -> np.ndarray:
    """torch.linspace(start, stop, num, dtype=float32), bit for bit: float32 step, each half of the range
    measured from its nearer end with a float64 multiply-add. np.linspace differs in ~30% of the betas."""
    start, stop = np.float32(start), np.float32(stop)
    if num == 1:
        return np.array([start], np.float32)
    step = np.float64((stop - start) / np.float32(num - 1))
    i = np.arange(num)
    return np.where(i < num // 2, start + step * i, stop - step * (num - 1 - i)).astype(np.float32)


def _alphas_cumprod(cfg: dict) -> np.ndarray:
    T = cfg["num_train_timesteps"]
    if cfg["trained_betas"] is not None:
        betas = _f32(cfg["trained_betas"])
    elif cfg["beta_schedule"] == "linear":
        betas = _linspace_f32(cfg["beta_start"], cfg["beta_end"], T)
    elif cfg["beta_schedule"] == "scaled_linear":
        betas = _linspace_f32(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, T) ** 2
    else:  # squaredcos_cap_v2 (Nichol & Dhariwal 2021), each beta capped at 0.999
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = _f32([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)])
    if cfg["rescale_betas_zero_snr"]:
        betas = _zero_terminal_snr(betas)
    return _cumprod_f32(1 - betas)


def _cumprod_f32(a: np.ndarray) -> np.ndarray:
    # torch.cumprod on CPU accumulates float32 in float64 and rounds each partial product.
    return np.cumprod(a.astype(np.float64)).astype(np.float32)


def _zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2024, Algorithm 1: shift sqrt(alpha_bar) so that its last value is 0 (the last timestep
    is pure noise), rescale it so that its first value is unchanged, and return the matching betas."""
    root = np.sqrt(_cumprod_f32(1 - betas))
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return (1 - alphas).astype(np.float32)


def _spaced_timesteps(cfg: dict, n: int) -> np.ndarray:
    """Descending training timesteps for n steps as DDIM/Euler space them (float64; linspace unrounded)."""
    spacing, T, steps_offset = cfg["timestep_spacing"], cfg["num_train_timesteps"], cfg["steps_offset"]
    if spacing == "linspace":
        return np.linspace(0, T - 1, n)[::-1]
    if spacing == "leading":
        return (np.arange(n) * (T // n))[::-1] + float(steps_offset)
    return np.round(np.arange(T, 0, -T / n)) - 1.0  # trailing


def _sigmas(timesteps: np.ndarray, alphas_cumprod: np.ndarray, final_sigmas_type: str) -> np.ndarray:
    """sigma = sqrt((1 - abar) / abar) at each timestep (linearly interpolated between integer timesteps),
    then the final sigma: 0 or the smallest training sigma."""
    train_sigmas = np.sqrt((1 - alphas_cumprod) / alphas_cumprod)
    sigma_last = train_sigmas[0] if final_sigmas_type == "sigma_min" else 0.0
    sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
    return np.append(sigmas, sigma_last).astype(np.float32)


class Scheduler:
    """Common config handling and state. Subclasses set `_defaults` (every config key the matching diffusers
    class reads that matters here, with its default) and `_supported` (key -> implemented values)."""

    _defaults: dict = {}
    _supported: dict = {}

    init_noise_sigma: float = 1.0
    _terminal_alpha_floor: float = 0.0
    timesteps: np.ndarray | None = None

    def __init__(self, config: dict):
        self._read_config(config)
        self.num_train_timesteps = int(self.config["num_train_timesteps"])
        self.alphas_cumprod = _alphas_cumprod(self.config)
        if self.config["rescale_betas_zero_snr"] and self._terminal_alpha_floor:
            self.alphas_cumprod[-1] = self._terminal_alpha_floor  # as diffusers: keeps the last sigma finite
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None

    def _read_config(self, config: dict) -> None:
        config = dict(config or {})
        # diffusers' from_config uses the class defaults for keys its writer listed as defaulted
        defaulted = set(config.get("_use_default_values", ()))
        self.config = {
            key: config[key] if key in config and key not in defaulted else default
            for key, default in self._defaults.items()
        }
        for key, allowed in self._supported.items():
            if self.config[key] not in allowed:
                raise SchedulerError(
                    f"{type(self).__name__} does not support {key}={self.config[key]!r} "
                    f"(supported: {', '.join(map(repr, allowed))})"
                )

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = operator.index(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise SchedulerError(
                f"num_inference_steps must be between 1 and num_train_timesteps="
                f"{self.num_train_timesteps}, got {n}"
            )
        self.num_inference_steps = n
        self._step_index = None

    def scale_model_input(self, sample: np.ndarray, timestep) -> np.ndarray:
        return _f32(sample)

    def step(self, model_output: np.ndarray, timestep, sample: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep) -> np.ndarray:
        """The sample at `timestep` of the forward process from `original` with `noise` (img2img, inpainting)."""
        raise NotImplementedError

    def start_index(self, strength: float) -> int:
        """Where img2img begins: the first int(steps * strength) steps of noise are skipped, as diffusers
        counts them (strength 1 starts from the first timestep)."""
        self._require_timesteps()
        n = len(self.timesteps)
        return max(n - min(int(n * strength), n), 0)

    def set_begin_index(self, index: int) -> None:
        """The position of the first timestep the caller will step from (diffusers' set_begin_index)."""
        self._step_index = index

    def _require_timesteps(self) -> None:
        if self.timesteps is None:
            raise SchedulerError(f"call {type(self).__name__}.set_timesteps() before stepping")

    def _position(self, timestep) -> int:
        """Index of `timestep` in the schedule, the second of duplicated ones as diffusers takes it."""
        self._require_timesteps()
        (hits,) = np.nonzero(self.timesteps == timestep)
        if not len(hits):
            raise SchedulerError(f"timestep {timestep} is not one of the scheduler's timesteps")
        return int(hits[1] if len(hits) > 1 else hits[0])

    def _index(self, timestep, *, unknown_is_last: bool = False) -> int:
        """Position in `timesteps`, looked up for the first timestep seen (img2img may start mid-schedule),
        then advanced by `step`."""
        self._require_timesteps()
        if self._step_index is None:
            (hits,) = np.nonzero(self.timesteps == timestep)
            if len(hits) > 1:  # diffusers takes the second of duplicated timesteps
                self._step_index = int(hits[1])
            elif len(hits) == 1:
                self._step_index = int(hits[0])
            elif unknown_is_last:
                self._step_index = len(self.timesteps) - 1
            else:
                raise SchedulerError(f"timestep {timestep} is not one of the scheduler's timesteps")
        return self._step_index
