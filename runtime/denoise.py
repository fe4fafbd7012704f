"""Denoise strategies: how the denoiser graph(s) are called across the sampling steps.

A strategy is `strategy(denoiser, scheduler, latents, timesteps, step_hook, progress, params) -> latents`. The
denoiser it calls is the artifact's denoiser graphs behind classifier-free guidance (`GuidedDenoiser`), so
no strategy knows about the guidance batch. The manifest names the strategy and its parameters
(`pipeline.denoise`): "plain" (one denoiser call per step) or "feature_cache" (`caching`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sdopt import interrupts
from sdopt.errors import SdoptError
from sdopt.graphs import DENOISER, NOISE_OUTPUT, io_name


def require_finite(outputs: dict, component: str, where: str) -> None:
    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise SdoptError(f"{where}: {component} produced non-finite values (NaN or Inf) in {name}; "
                             f"no image was made")


class GuidedDenoiser:
    """(latents, t, where) -> the guided noise prediction: the negative and positive halves of the batch in
    one call and their combination (guidance <= 1: the positive prompt alone). `extra` (B, C', h, w) is
    appended to the model input's channels (an inpainting UNet's mask and masked-image latents).

    `graphs`: role -> (component name, loaded model), the denoiser and any further denoiser roles a strategy
    calls (`call(..., role=...)`, with inputs of its own). `stats`: what the strategy reports of its calls."""

    def __init__(self, graphs: dict, conditioning: dict, batch: int, guidance: float, scheduler,
                 extra: np.ndarray | None = None):
        self.graphs, self.conditioning, self.batch = graphs, conditioning, batch
        self.noise_output = {role: io_name(list(model.outputs), NOISE_OUTPUT) for role, (_, model) in graphs.items()}
        self.guidance, self.scheduler, self.extra = guidance, scheduler, extra
        self.stats: dict = {}

    @property
    def guided(self) -> bool:
        return self.guidance > 1.0

    def __call__(self, latents: np.ndarray, t, where: str) -> np.ndarray:
        return self.call(latents, t, where)[0]

    def call(self, latents: np.ndarray, t, where: str, role: str = DENOISER, inputs: dict | None = None):
        """(guided noise prediction, every output of the graph of `role`)."""
        name, model = self.graphs[role]
        x = np.concatenate([latents] * self.batch) if self.guided else latents
        x = self.scheduler.scale_model_input(x, t)
        if self.extra is not None:
            x = np.concatenate([x, self.extra], axis=1)
        outputs = model.run({**self.conditioning, **(inputs or {}), "sample": x.astype(np.float32),
                             "timestep": np.full(x.shape[0], t, dtype=np.float32)})
        require_finite(outputs, f"the {name}", where)
        out = outputs[self.noise_output[role]]
        if self.guided:
            uncond, cond = out[:1], out[1:]
            out = uncond + np.float32(self.guidance) * (cond - uncond)
            require_finite({"guided": out}, f"classifier-free guidance at scale {self.guidance}", where)
        return out, outputs


def plain(denoiser: GuidedDenoiser, scheduler, latents: np.ndarray, timesteps, step_hook=None, progress=None,
          params=None):
    """One denoiser call per step. `step_hook(latents, i)` may change the latents after step i (inpainting
    keeps the unmasked part)."""
    n = len(timesteps)
    for i, t in enumerate(progress(timesteps) if progress else timesteps):
        interrupts.raise_if_interrupted()
        where = f"step {i + 1}/{n} (timestep {t})"
        latents = advance(scheduler, denoiser(latents, t, where), t, latents, i, where, step_hook)
    denoiser.stats = {"full": n}
    return latents


def advance(scheduler, eps: np.ndarray, t, latents: np.ndarray, i: int, where: str, step_hook=None) -> np.ndarray:
    """One scheduler step from the guided noise prediction, checked, then the step hook."""
    latents = scheduler.step(eps, t, latents).astype(np.float32)
    require_finite({"latents": latents}, "the scheduler", where)
    return latents if step_hook is None else step_hook(latents, i)


@dataclass(frozen=True)
class Strategy:
    loop: Callable
    roles: tuple = ()  # further denoiser roles the loop calls
    check: Callable | None = None  # (params, where) -> params with defaults; None: it takes no parameters
    io: tuple = ()  # (role, "inputs" | "outputs", name): what the loop feeds or reads beyond the plain UNet's


def strategies() -> dict[str, Strategy]:
    from . import caching

    return {"plain": Strategy(plain),
            "feature_cache": Strategy(caching.feature_cache, (caching.SHALLOW_ROLE,), caching.check_params,
                                      ((DENOISER, "outputs", caching.FEATURE),
                                       (caching.SHALLOW_ROLE, "inputs", caching.FEATURE)))}


def strategy(spec: dict, overrides: dict | None = None) -> tuple[str, Strategy, dict]:
    """The manifest's `denoise` entry as (name, strategy, checked parameters); `overrides` (`--denoise KEY=VALUE`)
    may name another strategy (`strategy=plain`: the full UNet every step) or change parameters."""
    overrides = dict(overrides or {})
    name = overrides.pop("strategy", spec["strategy"])
    known = strategies()
    if name not in known:
        raise SdoptError(f"denoise strategy '{name}' is unknown to this runtime; it knows " + ", ".join(known))
    chosen = known[name]
    stored = spec.get("params", {})
    if not isinstance(stored, dict):
        raise SdoptError(f"denoise strategy {spec['strategy']}: its params must be a mapping")
    params = {**stored, **overrides} if name == spec["strategy"] else overrides
    if chosen.check is None:
        if params:
            raise SdoptError(f"denoise strategy {name} takes no parameters ({', '.join(params)} given)")
        return name, chosen, {}
    return name, chosen, chosen.check(params, f"denoise strategy {name}")
