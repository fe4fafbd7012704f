"""Backbone adapters: everything model-specific about a denoiser, one module per family, registered by the
diffusers classes it handles (`registry`). Passes and the exporter ask the adapter instead of assuming a UNet.

An adapter today writes the manifest's denoiser spec (`denoiser_spec(source, components)`, the contract in
`sdopt.contract.denoiser_spec`); docs/backbones.md says what a new backbone provides.
"""

from sdopt.backbones import flux, mmdit, unet  # noqa: F401  (each registers itself)
from sdopt.backbones.registry import backbone_of, backbone_of_pipeline, register

__all__ = ["backbone_of", "backbone_of_pipeline", "register"]
