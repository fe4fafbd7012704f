"""Numpy ports of three diffusers (0.42.1) schedulers: DDIM (eta = 0), Euler and DPM-Solver++(2M).

`make_scheduler(name, config)` takes a diffusers `scheduler_config.json` dict, even one written by another
scheduler class, and behaves like `<Class>.from_config(config)`: it reads only the keys its diffusers class
accepts, with that class's defaults for the others. Options that change the arithmetic but are not
implemented here are refused with a ValueError rather than silently ignored.

All arithmetic is float32 where diffusers computes in float32, in the same order, so trajectories agree
with diffusers to a few float32 ulps. Inputs of any float dtype are upcast; outputs are float32.
"""

from __future__ import annotations

import math
import operator

import numpy as np

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


def make_scheduler(name: str, config: dict) -> Scheduler:
    classes = {"ddim": DDIMScheduler, "euler": EulerScheduler, "dpmpp": DPMSolverPPScheduler}
    if name not in classes:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(classes)}")
    check_config(config)
    return classes[name](config)


def check_config(config: dict) -> None:
    """ValueError unless the numbers the schedulers compute with have usable types and ranges (a config
    may come from anywhere); unsupported option values are refused by each scheduler."""
    from sdopt import schema as s

    numbers = {"num_train_timesteps": s.integer(2, 100_000), "steps_offset": s.integer(0, 1000),
               "solver_order": s.integer(1, 3), "beta_start": s.number(0, 1, low_open=True),
               "beta_end": s.number(0, 1, low_open=True), "clip_sample_range": s.number(0, 1e6, low_open=True),
               "trained_betas": s.nullable(s.array(s.number(0, 1, low_open=True), 100_000, min_length=2))}
    if not isinstance(config, dict):
        raise ValueError("the scheduler config is not a mapping")
    defaulted = config.get("_use_default_values", [])
    if not isinstance(defaulted, list) or not all(isinstance(k, str) for k in defaulted):
        raise ValueError("scheduler config: _use_default_values is not a list of names")
    try:
        for key, check in numbers.items():
            if key in config and key not in defaulted:
                check(config[key], key)
    except s.Invalid as err:
        raise ValueError(f"scheduler config: {err}") from None
    betas = config.get("trained_betas")
    if betas is not None and len(betas) != config.get("num_train_timesteps", _COMMON_DEFAULTS["num_train_timesteps"]):
        raise ValueError("scheduler config: trained_betas must have num_train_timesteps entries")


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
        config = dict(config or {})
        # diffusers' from_config uses the class defaults for keys its writer listed as defaulted
        defaulted = set(config.get("_use_default_values", ()))
        self.config = {
            key: config[key] if key in config and key not in defaulted else default
            for key, default in self._defaults.items()
        }
        for key, allowed in self._supported.items():
            if self.config[key] not in allowed:
                raise ValueError(
                    f"{type(self).__name__} does not support {key}={self.config[key]!r} "
                    f"(supported: {', '.join(map(repr, allowed))})"
                )
        self.num_train_timesteps = int(self.config["num_train_timesteps"])
        self.alphas_cumprod = _alphas_cumprod(self.config)
        if self.config["rescale_betas_zero_snr"] and self._terminal_alpha_floor:
            self.alphas_cumprod[-1] = self._terminal_alpha_floor  # as diffusers: keeps the last sigma finite
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        n = operator.index(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be between 1 and num_train_timesteps="
                f"{self.num_train_timesteps}, got {n}"
            )
        self.num_inference_steps = n
        self._step_index = None

    def scale_model_input(self, sample: np.ndarray, timestep) -> np.ndarray:
        return _f32(sample)

    def step(self, model_output: np.ndarray, timestep, sample: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _require_timesteps(self) -> None:
        if self.timesteps is None:
            raise ValueError(f"call {type(self).__name__}.set_timesteps() before stepping")

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
                raise ValueError(f"timestep {timestep} is not one of the scheduler's timesteps")
        return self._step_index


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

        kind = self.config["prediction_type"]
        if kind == "epsilon":
            eps = out
            x0 = (x - sqrt_1m_abar * eps) / sqrt_abar
        elif kind == "v_prediction":
            x0 = sqrt_abar * x - sqrt_1m_abar * out
            eps = sqrt_abar * out + sqrt_1m_abar * x
        else:  # sample
            x0 = out
            eps = (x - sqrt_abar * x0) / sqrt_1m_abar
        if self.config["clip_sample"]:
            r = self.config["clip_sample_range"]
            x0 = np.clip(x0, -r, r)  # eps is deliberately not recomputed from the clipped x0, as in diffusers
        return _f32(np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps)


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
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            x0 = x - sigma * out
        elif kind == "v_prediction":
            x0 = out * (-sigma / np.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)
        else:  # sample
            x0 = out
        d = (x - x0) / sigma
        self._step_index += 1
        return _f32(x + d * (sigma_next - sigma))


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
        if c["prediction_type"] == "epsilon":
            x0 = (x - sigma_s0 * out) / alpha_s0
        elif c["prediction_type"] == "v_prediction":
            x0 = alpha_s0 * x - sigma_s0 * out
        else:  # sample
            x0 = out
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
