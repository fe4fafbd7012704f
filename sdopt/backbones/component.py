"""What every adapter shares: the denoiser is the pipeline attribute named by the adapter's `component`."""

from __future__ import annotations


class PipelineComponent:
    component = ""  # the pipeline attribute holding the denoiser, and its graph's folder in the artifact

    def denoiser(self, pipe):
        return getattr(pipe, self.component)

    def replace(self, pipe, module) -> None:
        setattr(pipe, self.component, module)

    def latent_channels_in(self, model) -> int:
        return int(model.config.in_channels)
