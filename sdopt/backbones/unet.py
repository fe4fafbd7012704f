"""The UNet family: UNet2DConditionModel (SD1.x, SD2.x, SDXL, inpainting, LCM students)."""

from __future__ import annotations

from sdopt.denoiser_spec import unet_spec

from .registry import register


class UNetBackbone:
    family = "unet"
    handles = ("UNet2DConditionModel",)

    @staticmethod
    def denoiser_spec(source, components: dict) -> dict:
        """The manifest's denoiser spec from the exported graphs (`components`: name -> record with role, inputs
        and outputs) and the source pipeline."""
        pipe = source.pipeline
        return unet_spec(components, pipe.vae.config.latent_channels, dict(pipe.scheduler.config),
                         source.tokenizers[0].model_max_length)


register(UNetBackbone)
