"""How a UNet2DConditionModel is called, in the exported graph's terms: graph inputs by name (`sample`,
`timestep`, `encoder_hidden_states`, an LCM student's `timestep_cond`, SDXL's `text_embeds` and `time_ids`)
<-> the diffusers call's arguments."""

from __future__ import annotations

import torch

from sdopt.contract.graphs import ADDED_CONDITIONS
from sdopt.contract.sampling import latent_size_multiple

LATENT, TIMESTEP, TEXT, GUIDANCE = "sample", "timestep", "encoder_hidden_states", "timestep_cond"


def run_unet(unet, inputs: dict):
    """A diffusers UNet's prediction for graph inputs by name (extra keys such as a record's step are ignored)."""
    added = {k: inputs[k] for k in ADDED_CONDITIONS if k in inputs} or None
    return unet(inputs[LATENT], inputs[TIMESTEP], encoder_hidden_states=inputs[TEXT],
                timestep_cond=inputs.get(GUIDANCE), added_cond_kwargs=added, return_dict=False)[0]


def timestep_argument(args: tuple, kwargs: dict):
    return args[1] if len(args) > 1 else kwargs["timestep"]


def unet_call_inputs(args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel call's arguments, by graph input name."""
    sample = args[0]
    hidden = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]
    timestep = timestep_argument(args, kwargs)
    inputs = {LATENT: sample,
              TIMESTEP: torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0]),
              TEXT: hidden}
    if kwargs.get("timestep_cond") is not None:
        inputs[GUIDANCE] = kwargs["timestep_cond"].to(torch.float32)
    added = kwargs.get("added_cond_kwargs") or {}
    inputs.update({key: added[key].to(torch.float32) for key in ADDED_CONDITIONS if key in added})
    return inputs


def unet_latent_multiple(unet) -> int:
    return latent_size_multiple(len(unet.config.block_out_channels))


def example_inputs(source, batch: int = 2, latent_hw: tuple[int, int] | None = None) -> dict:
    """Example UNet inputs in the exported graph's names and order (random, seeded)."""
    unet = source.pipeline.unet
    h, w = latent_hw or (unet_latent_multiple(unet),) * 2
    hidden = sum(e.config.hidden_size for e in source.text_encoders) if source.kind == "sdxl" \
        else source.text_encoders[0].config.hidden_size
    g = torch.Generator().manual_seed(0)
    inputs = {
        LATENT: torch.randn(batch, unet.config.in_channels, h, w, generator=g),
        TIMESTEP: torch.full((batch,), 500.0),
        TEXT: torch.randn(batch, 77, hidden, generator=g),
    }
    if unet.config.time_cond_proj_dim:  # a UNet distilled with its guidance embedded (LCM)
        from sdopt.contract.sampling import guidance_embedding

        inputs[GUIDANCE] = torch.from_numpy(guidance_embedding([source.guidance] * batch,
                                                               unet.config.time_cond_proj_dim))
    if source.kind == "sdxl":
        inputs["text_embeds"] = torch.randn(batch, source.text_encoders[1].config.projection_dim, generator=g)
        inputs["time_ids"] = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]).repeat(batch, 1)
    return inputs


class GraphUNet(torch.nn.Module):
    """The UNet called with its graph inputs in `names`' order: what the exporter traces."""

    def __init__(self, unet, names):
        super().__init__()
        self.unet, self.names = unet, tuple(names)

    def forward(self, *tensors):
        return run_unet(self.unet, dict(zip(self.names, tensors)))


def attention_downsample(unet_config) -> int | None:
    """Latent pixels per token side at the UNet's finest self-attention (the runtime sizes its score matrix
    from it before it generates); None without attention."""
    types = list(unet_config.down_block_types)
    level = next((i for i, name in enumerate(types) if "Attn" in name), None)
    if level is None and "Attn" in str(unet_config.mid_block_type or ""):
        level = len(types) - 1
    return None if level is None else 2 ** level
