"""Denoise strategies: how the denoiser graph(s) are called across the sampling steps.

A strategy is `strategy(denoiser, scheduler, latents, timesteps, step_hook, progress) -> latents`. The
denoiser it calls is the artifact's denoiser graph behind classifier-free guidance (`GuidedDenoiser`), so
no strategy knows about the guidance batch. The manifest names the strategy (`pipeline.denoise`); today
"plain" (one denoiser call per step); caching and few-step strategies register here.
"""

from __future__ import annotations

import numpy as np

from sdopt import interrupts
from sdopt.errors import SdoptError


def require_finite(outputs: dict, component: str, where: str) -> None:
    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise SdoptError(f"{where}: {component} produced non-finite values (NaN or Inf) in {name}; "
                             f"no image was made")


class GuidedDenoiser:
    """(latents, t, where) -> the guided noise prediction: the negative and positive halves of the batch in
    one call and their combination (guidance <= 1: the positive prompt alone). `extra` (B, C', h, w) is
    appended to the model input's channels (an inpainting UNet's mask and masked-image latents)."""

    def __init__(self, model, name: str, conditioning: dict, batch: int, guidance: float, scheduler,
                 extra: np.ndarray | None = None):
        self.model, self.name, self.conditioning, self.batch = model, name, conditioning, batch
        self.guidance, self.scheduler, self.extra = guidance, scheduler, extra

    @property
    def guided(self) -> bool:
        return self.guidance > 1.0

    def __call__(self, latents: np.ndarray, t, where: str) -> np.ndarray:
        x = np.concatenate([latents] * self.batch) if self.guided else latents
        x = self.scheduler.scale_model_input(x, t)
        if self.extra is not None:
            x = np.concatenate([x, self.extra], axis=1)
        out = self.model.run({**self.conditioning, "sample": x.astype(np.float32),
                              "timestep": np.full(x.shape[0], t, dtype=np.float32)})
        require_finite(out, f"the {self.name}", where)
        out = out["noise_pred"]
        if self.guided:
            uncond, cond = out[:1], out[1:]
            out = uncond + np.float32(self.guidance) * (cond - uncond)
            require_finite({"guided": out}, f"classifier-free guidance at scale {self.guidance}", where)
        return out


def plain(denoiser: GuidedDenoiser, scheduler, latents: np.ndarray, timesteps, step_hook=None, progress=None):
    """One denoiser call per step. `step_hook(latents, i)` may change the latents after step i (inpainting
    keeps the unmasked part)."""
    n = len(timesteps)
    for i, t in enumerate(progress(timesteps) if progress else timesteps):
        interrupts.raise_if_interrupted()
        where = f"step {i + 1}/{n} (timestep {t})"
        latents = scheduler.step(denoiser(latents, t, where), t, latents).astype(np.float32)
        require_finite({"latents": latents}, "the scheduler", where)
        if step_hook is not None:
            latents = step_hook(latents, i)
    return latents


STRATEGIES = {"plain": plain}


def strategy(spec: dict):
    name = spec["strategy"]
    if name not in STRATEGIES:
        raise SdoptError(f"denoise strategy '{name}' is unknown to this runtime; it knows " + ", ".join(STRATEGIES))
    return STRATEGIES[name]
