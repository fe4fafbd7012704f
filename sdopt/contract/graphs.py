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

# Graph I/O names, as Optimum's ONNX export spells them (its ORT and OpenVINO pipelines feed and read them by
# name); each tuple: the name written now, then the one artifacts of schema 2 used (still read)
NOISE_OUTPUT = ("out_sample", "noise_pred")  # the denoiser's noise prediction
TRANSFORMER_OUTPUT = "out_hidden_states"  # a transformer denoiser's prediction (Optimum's name for SD3 and FLUX)
PREDICTION_OUTPUTS = (*NOISE_OUTPUT, TRANSFORMER_OUTPUT)  # what the runtime reads as a denoiser graph's prediction
LATENT_INPUT = ("latent_sample", "latent")  # the VAE decoder's input
IMAGE_IO = ("sample", "image")  # the VAE decoder's output and the VAE encoder's input
PROMPT_OUTPUT = ("last_hidden_state", "hidden_states")  # a text encoder's (SD): the embeddings the UNet reads
POOLED_OUTPUT = "text_embeds"  # SDXL's second text encoder, SD3's CLIPs: the pooled projection
POOLED_OUTPUTS = (POOLED_OUTPUT, "pooler_output")  # ... and a plain CLIP's pooled output (FLUX)
POSTERIOR_OUTPUT = "latent_parameters"  # the VAE encoder's: posterior mean and log-variance along channels
HIDDEN_STATE = "hidden_states.{}"  # SDXL text encoders: every layer's hidden state, 0 (embeddings) to N


def io_name(names: list[str], choices) -> str | None:
    """The first of `choices` (a name or a tuple of names) that a graph's inputs or outputs `names` hold."""
    return next((n for n in ((choices,) if isinstance(choices, str) else choices) if n in names), None)


def prompt_output(outputs: list[str]) -> str:
    """The text encoder output the UNet reads: the penultimate layer's hidden state where the graph has
    every layer's (SDXL, as diffusers takes `hidden_states[-2]`), else the last hidden state."""
    layers = sorted(int(n.split(".")[1]) for n in outputs if n.startswith("hidden_states.") and n[14:].isdigit())
    if layers:
        return HIDDEN_STATE.format(layers[-1] - 1)
    return io_name(outputs, PROMPT_OUTPUT)


# how attention layers are exported: all heads in one batched matmul (diffusers' own), or one head at a time
# (sdopt/backbones/attention.py: one head's token x token scores in memory instead of all of them)
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
