"""Numpy ports of diffusers (0.42.1) schedulers, one per file: DDIM (eta = 0), Euler, DPM-Solver++(2M) and LCM for
the DDPM-trained models (SD1.x, SD2.x, SDXL; by name in `CLASSES`), and flow-matching Euler for the transformer
models (`flow-euler`: SD3, SD3.5 and FLUX.1's schedules, checked against diffusers). A sampler runs only artifacts
of its family (`sdopt.contract.sampling.SCHEDULER_FAMILIES`, checked by the pipeline).

`make_scheduler(name, config)` takes a diffusers `scheduler_config.json` dict, even one written by another
scheduler class, and behaves like `<Class>.from_config(config)`: it reads only the keys its diffusers class
accepts, with that class's defaults for the others. Options that change the arithmetic but are not
implemented here are refused (SchedulerError, sdopt's one-line error) rather than silently ignored.
"""

from __future__ import annotations

from .base import _COMMON_DEFAULTS, Scheduler, SchedulerError
from .ddim import DDIMScheduler
from .dpmpp import DPMSolverPPScheduler
from .euler import EulerScheduler
from .flow_euler import FlowMatchEulerScheduler
from .lcm import LCMScheduler

CLASSES = {"ddim": DDIMScheduler, "euler": EulerScheduler, "dpmpp": DPMSolverPPScheduler, "lcm": LCMScheduler,
           "flow-euler": FlowMatchEulerScheduler}
__all__ = ["CLASSES", "DDIMScheduler", "DPMSolverPPScheduler", "EulerScheduler", "FlowMatchEulerScheduler",
           "LCMScheduler", "Scheduler",
           "SchedulerError", "check_config", "make_scheduler"]


def make_scheduler(name: str, config: dict) -> Scheduler:
    if name not in CLASSES:
        raise SchedulerError(f"unknown scheduler {name!r}; choose one of {', '.join(CLASSES)}")
    check_config(config)
    return CLASSES[name](config)


def check_config(config: dict) -> None:
    """SchedulerError unless the numbers the schedulers compute with have usable types and ranges (a config
    may come from anywhere); unsupported option values are refused by each scheduler."""
    from sdopt.contract import schema as s

    numbers = {"num_train_timesteps": s.integer(2, 100_000), "steps_offset": s.integer(0, 1000),
               "solver_order": s.integer(1, 3),
               "original_inference_steps": s.integer(1, 100_000), "timestep_scaling": s.number(0, 1e6),
               "beta_start": s.number(0, 1, low_open=True),
               "beta_end": s.number(0, 1, low_open=True), "clip_sample_range": s.number(0, 1e6, low_open=True),
               "trained_betas": s.nullable(s.array(s.number(0, 1, low_open=True), 100_000, min_length=2))}
    if not isinstance(config, dict):
        raise SchedulerError("the scheduler config is not a mapping")
    defaulted = config.get("_use_default_values", [])
    if not isinstance(defaulted, list) or not all(isinstance(k, str) for k in defaulted):
        raise SchedulerError("scheduler config: _use_default_values is not a list of names")
    try:
        for key, check in numbers.items():
            if key in config and key not in defaulted:
                check(config[key], key)
    except s.Invalid as err:
        raise SchedulerError(f"scheduler config: {err}") from None
    betas = config.get("trained_betas")
    if betas is not None and len(betas) != config.get("num_train_timesteps", _COMMON_DEFAULTS["num_train_timesteps"]):
        raise SchedulerError("scheduler config: trained_betas must have num_train_timesteps entries")
