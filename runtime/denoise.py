"""The denoiser behind its guidance, and the plain denoise strategy (one denoiser call per step).

Importing this module registers every denoise strategy the runtime has (`plain` here, `feature_cache` from
`caching`); `strategy()` looks one up by the manifest's name.
"""

from __future__ import annotations

import numpy as np

from sdopt.contract import interrupts
from sdopt.contract.graphs import DENOISER, PREDICTION_OUTPUTS, io_name

from . import caching  # noqa: F401  (registers feature_cache)
from .guidance import Guidance
from .strategies import Strategy, advance, register, require_finite, strategy  # noqa: F401  (strategy: the lookup)


class GuidedDenoiser:
    """(latents, t, where) -> the guided prediction: the guidance's branches in one call, combined
    (`guidance.Guidance`). `extra` (B, C', h, w) is appended to the model input's channels (an inpainting
    denoiser's mask and masked-image latents).

    `graphs`: role -> (component name, loaded model), the denoiser and any further denoiser roles a strategy
    calls (`call(..., role=...)`, with inputs of its own); `inputs`: the names of its latent and timestep inputs
    (the denoiser spec's). `stats`: what the strategy reports of its calls."""

    def __init__(self, graphs: dict, conditioning: dict, guidance: Guidance, scheduler, inputs: tuple[str, str],
                 extra: np.ndarray | None = None):
        self.graphs, self.guidance = graphs, guidance
        self.latent_input, self.timestep_input = inputs  # the denoiser spec's latent and timestep inputs
        self.conditioning = {**conditioning, **guidance.conditioning(guidance.branches)}
        self.noise_output = {role: io_name(list(model.outputs), PREDICTION_OUTPUTS) for role, (_, model) in graphs.items()}
        self.scheduler, self.extra = scheduler, extra
        self.stats: dict = {}

    def __call__(self, latents: np.ndarray, t, where: str) -> np.ndarray:
        return self.call(latents, t, where)[0]

    def call(self, latents: np.ndarray, t, where: str, role: str = DENOISER, inputs: dict | None = None):
        """(guided prediction, every output of the graph of `role`)."""
        name, model = self.graphs[role]
        x = np.concatenate([latents] * self.guidance.branches)
        x = self.scheduler.scale_model_input(x, t)
        if self.extra is not None:
            x = np.concatenate([x, self.extra], axis=1)
        outputs = model.run({**self.conditioning, **(inputs or {}), self.latent_input: x.astype(np.float32),
                             self.timestep_input: np.full(x.shape[0], t, dtype=np.float32)})
        require_finite(outputs, f"the {name}", where)
        out = self.guidance.combine(outputs[self.noise_output[role]])
        if self.guidance.branches > 1:
            require_finite({"guided": out}, f"classifier-free guidance at scale {self.guidance.scale}", where)
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


register("plain", Strategy(plain))
