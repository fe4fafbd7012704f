"""How a guidance scale reaches the denoiser, one strategy per kind:

    classifier-free  the negative and positive prompts as a batch of two, combined after the call
                     (uncond + scale * (cond - uncond)); a scale <= 1 is the positive prompt alone
    embedded         the scale is an input of the denoiser (a guidance-distilled model: LCM's w-embedding of
                     `dim` features, FLUX.1-dev's scale itself), one batch
    none             the denoiser takes no guidance (FLUX.1-schnell), one batch

The pipeline picks the kind from the artifact; the denoise strategies never see the guidance batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdopt.contract.sampling import guidance_embedding


@dataclass(frozen=True)
class Guidance:
    scale: float

    branches = 1  # denoiser batch per image

    def conditioning(self, batch: int) -> dict:
        """Denoiser inputs this guidance adds."""
        return {}

    def combine(self, out: np.ndarray) -> np.ndarray:
        """The guided prediction from the denoiser's output over the branches."""
        return out


@dataclass(frozen=True)
class ClassifierFree(Guidance):
    branches = 2

    def combine(self, out: np.ndarray) -> np.ndarray:
        uncond, cond = out[:1], out[1:]
        return uncond + np.float32(self.scale) * (cond - uncond)


@dataclass(frozen=True)
class Embedded(Guidance):
    dim: int = 0  # width of the scale's embedding
    name: str = "timestep_cond"  # the denoiser input that takes it (the spec's guidance_scale input)

    def conditioning(self, batch: int) -> dict:
        if not self.dim:  # the scale itself, one per row
            return {self.name: np.full(batch, self.scale, dtype=np.float32)}
        return {self.name: guidance_embedding([self.scale] * batch, self.dim)}


@dataclass(frozen=True)
class Unguided(Guidance):
    pass


KINDS = {"classifier-free": ClassifierFree, "embedded": Embedded, "none": Unguided}


def choose(scale: float, kind: str = "classifier-free", dim: int | None = None, name: str | None = None) -> Guidance:
    """The guidance of the artifact's `kind` (its denoiser spec) at `scale`; classifier-free guidance at a scale
    <= 1 is the positive prompt alone."""
    if kind == "embedded":
        return Embedded(scale, dim or 0, name or "timestep_cond")
    if kind == "none":
        return Unguided(scale)
    return ClassifierFree(scale) if scale > 1.0 else Unguided(scale)
