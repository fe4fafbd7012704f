"""The graphs an artifact holds: each a traced torch module with a role the runtime loads it by.

The exporter starts from the source pipeline's graphs (text encoders, denoiser, VAE decoder and encoder);
a pass may add its own (for example a second, partial UNet graph), described the same way. Torch-free:
the spec only carries the torch objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Roles the runtime knows; a denoise strategy may name further denoiser roles of its own.
TEXT_ENCODER, DENOISER, VAE_DECODER, VAE_ENCODER = "text_encoder", "denoiser", "vae_decoder", "vae_encoder"
VAE_DECODER_FULL = "vae_decoder_full"  # the model's own decoder where a tiny one is the vae_decoder
ROLES = (TEXT_ENCODER, DENOISER, VAE_DECODER, VAE_ENCODER, VAE_DECODER_FULL)


ADDED_CONDITIONS = ("text_embeds", "time_ids")  # SDXL's added_cond_kwargs


def run_unet(unet, inputs: dict):
    """A diffusers UNet's noise prediction for graph inputs by name (extra keys such as a record's step are
    ignored)."""
    added = {k: inputs[k] for k in ADDED_CONDITIONS if k in inputs} or None
    return unet(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["encoder_hidden_states"],
                timestep_cond=inputs.get("timestep_cond"), added_cond_kwargs=added, return_dict=False)[0]


# how attention layers are exported: all heads in one batched matmul (diffusers' own), or one head at a time
# (export/attention.py: one head's token x token scores in memory instead of all of them)
ATTENTION_FORMS = ("batched", "head-sliced")
DEFAULT_ATTENTION = "head-sliced"


def is_denoiser(role: str) -> bool:
    """The denoiser and the further denoiser graphs of a strategy (`denoiser_shallow`): run on the guidance batch."""
    return role == DENOISER or role.startswith(DENOISER + "_")


@dataclass
class GraphSpec:
    name: str  # the artifact folder the graph is written to (a plain identifier)
    role: str
    component: str  # the pipeline attribute holding the module (its quantization is looked up by it)
    wrapper: object  # torch.nn.Module whose forward takes and returns tensors only: what is traced
    inputs: dict  # input name -> example tensor, in the order forward takes them
    outputs: list  # output names
    dynamic_axes: dict  # as torch.onnx.export takes them
    scope: str = ""  # node-name prefix of the component inside the traced wrapper, e.g. "/unet/"
    partial: bool = False  # the graph holds only some of the component's layers
    details: dict = field(default_factory=dict)  # recorded in the manifest beside the graph
