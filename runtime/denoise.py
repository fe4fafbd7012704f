"""The denoiser behind its guidance, and the plain denoise strategy (one denoiser call per step).

Importing this module registers every denoise strategy the runtime has (`plain` here, `feature_cache` from
`caching`); `strategy()` looks one up by the manifest's name.
"""

from __future__ import annotations

import numpy as np

from sdopt.contract import interrupts
from sdopt.contract.graphs import DENOISER, PREDICTION_OUTPUTS, io_name
from sdopt.contract.sampling import pack_latents, unpack_latents

from . import caching  # noqa: F401  (registers feature_cache)
from .guidance import Guidance
from .strategies import Strategy, advance, register, require_finite, strategy  # noqa: F401  (strategy: the lookup)


class GuidedDenoiser:
    """(latents, t, where) -> the guided prediction: the guidance's branches in one call, combined
    (`guidance.Guidance`). `extra` (B, C', h, w) is appended to the model input's channels (an inpainting
    denoiser's mask and masked-image latents).

    `graphs`: role -> (component name, loaded model), the denoiser and any further denoiser roles a strategy
    calls (`call(..., role=...)`, with inputs of its own); `inputs`: the names of its latent and timestep inputs
    (the denoiser spec's). `packed`: the denoiser reads and predicts the latents in 2x2 patches (FLUX): packed
    before the call, unpacked after it, so schedulers and strategies see (B, C, h, w) throughout.
    `timestep_divisor`: the scheduler's timestep over it is what the denoiser reads. `stats`: what the strategy
    reports of its calls."""

    def __init__(self, graphs: dict, conditioning: dict, guidance: Guidance, scheduler, inputs: tuple[str, str],
                 extra: np.ndarray | None = None, packed: bool = False, timestep_divisor: float = 1.0):
        self.graphs, self.guidance = graphs, guidance
        self.packed, self.timestep_divisor = packed, np.float32(timestep_divisor)
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
        height, width = x.shape[2:]
        if self.packed:
            x = pack_latents(x)
        timestep = np.full(x.shape[0], t, dtype=np.float32)
        if self.timestep_divisor != 1:
            timestep = timestep / self.timestep_divisor
        outputs = model.run({**self.conditioning, **(inputs or {}), self.latent_input: x.astype(np.float32),
                             self.timestep_input: timestep})
        require_finite(outputs, f"the {name}", where)
        prediction = outputs[self.noise_output[role]]
        if self.packed:
            prediction = unpack_latents(prediction, height, width)
        out = self.guidance.combine(prediction)
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
