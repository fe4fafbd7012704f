"""The FLUX family: FluxTransformer2DModel (FLUX.1 dev and schnell, flow matching).

The denoiser takes the latents packed in 2x2 patches (B, h/2 * w/2, 4C), the timestep as sigma (t / 1000), T5's
tokens, CLIP's pooled output, the image and text position ids its rotary embedding reads, and (dev) the guidance
scale it was distilled with; it predicts the flow velocity in the packed layout. Graph I/O names are Optimum's
(`flux-transformer-2d`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from sdopt.backbones.mmdit import POOLED, TEXT, TIMESTEP, MMDiTBackbone
from sdopt.backbones.registry import register
from sdopt.contract.graphs import TRANSFORMER_OUTPUT as OUTPUT
from sdopt.contract.sampling import image_position_ids

LATENT, IMAGE_IDS, TEXT_IDS, GUIDANCE = "hidden_states", "img_ids", "txt_ids", "guidance"
PACK = 2  # latent pixels per packed patch side
DEFAULT_SAMPLE_SIZE = 128  # latent side of FLUX.1's default 1024² images (the pipeline's default_sample_size)


class FluxBackbone(MMDiTBackbone):
    family = "flux"
    handles = ("FluxTransformer2DModel",)
    latent_input = LATENT
    guidance_input = GUIDANCE
    time_embedding_layers = ("norm1.linear", "norm1_context.linear", "norm.linear")  # single blocks: norm.linear

    def latent_channels_in(self, model) -> int:
        return int(model.config.in_channels) // PACK**2

    def embeds_guidance(self, model) -> bool:
        return bool(model.config.guidance_embeds)

    def default_sample_size(self, model) -> int:
        return DEFAULT_SAMPLE_SIZE

    def call(self, model, inputs: dict):
        return model(hidden_states=inputs[LATENT], timestep=inputs[TIMESTEP], guidance=inputs.get(GUIDANCE),
                     pooled_projections=inputs[POOLED], encoder_hidden_states=inputs[TEXT], txt_ids=inputs[TEXT_IDS],
                     img_ids=inputs[IMAGE_IDS], return_dict=False)[0]

    def call_inputs(self, args: tuple, kwargs: dict) -> dict:
        named = {k: kwargs[k] for k in (LATENT, TIMESTEP, GUIDANCE, POOLED, TEXT, TEXT_IDS, IMAGE_IDS)
                 if kwargs.get(k) is not None}
        named[TIMESTEP] = torch.as_tensor(named[TIMESTEP], dtype=torch.float32).reshape(-1) \
            .expand(named[LATENT].shape[0])
        return named

    def timestep_argument(self, args: tuple, kwargs: dict):
        return kwargs[TIMESTEP]

    def timestep_range(self, source) -> int:
        """sigma in [0, 1] (the pipeline feeds t / 1000)."""
        return 1

    def example_inputs(self, source, batch: int = 2, latent_hw: tuple[int, int] | None = None) -> dict:
        model = self.denoiser(source.pipeline)
        h, w = latent_hw or (2 * PACK,) * 2
        tokens, text_tokens = (h // PACK) * (w // PACK), 7
        g = torch.Generator().manual_seed(0)
        inputs = {
            LATENT: torch.randn(batch, tokens, model.config.in_channels, generator=g),
            TEXT: torch.randn(batch, text_tokens, model.config.joint_attention_dim, generator=g),
            POOLED: torch.randn(batch, model.config.pooled_projection_dim, generator=g),
            TIMESTEP: torch.full((batch,), 0.5),
            IMAGE_IDS: torch.from_numpy(image_position_ids(h // PACK, w // PACK)),
            TEXT_IDS: torch.zeros(text_tokens, 3),
        }
        if self.embeds_guidance(model):
            inputs[GUIDANCE] = torch.full((batch,), 3.5)
        return inputs

    def denoiser_graph(self, source):
        from sdopt.contract.graphs import DENOISER, GraphSpec

        inputs = self.example_inputs(source)
        packed = {0: "batch", 1: "tokens"}
        axes = {LATENT: packed, TEXT: {0: "batch", 1: "text_tokens"}, POOLED: {0: "batch"}, TIMESTEP: {0: "batch"},
                IMAGE_IDS: {0: "tokens"}, TEXT_IDS: {0: "text_tokens"}, GUIDANCE: {0: "batch"}, OUTPUT: packed}
        module = self.graph_module(self.denoiser(source.pipeline), inputs)
        return GraphSpec(self.component, DENOISER, self.component, module, inputs, [OUTPUT],
                         {name: axes[name] for name in [*inputs, OUTPUT]}, scope=self.graph_scope)

    def latent_size_multiple(self, model) -> int:
        return PACK

    def attention_downsample(self, model) -> int | None:
        return PACK

    def denoiser_spec(self, source, components: dict) -> dict:
        model = self.denoiser(source.pipeline)
        encoders = [{"graph": e.name, "tokenizer": e.tokenizer_folder, "kind": e.kind, "max_length": e.max_length,
                     "output": "last_hidden_state" if e.kind == "t5" else e.pooled_output,
                     "combine": "sequence" if e.kind == "t5" else "pooled"} for e in source.text_encoder_graphs()]
        inputs = [{"name": LATENT, "role": "latent", "axes": ["batch", "tokens", "channels"]},
                  {"name": TIMESTEP, "role": "timestep", "axes": ["batch"]},
                  {"name": TEXT, "role": "text", "axes": ["batch", "tokens", "features"]},
                  {"name": POOLED, "role": "pooled_text", "axes": ["batch", "features"]},
                  {"name": IMAGE_IDS, "role": "position_ids", "axes": ["tokens", "axes"]},
                  {"name": TEXT_IDS, "role": "text_position_ids", "axes": ["tokens", "axes"]}]
        if self.embeds_guidance(model):
            inputs.append({"name": GUIDANCE, "role": "guidance_scale", "axes": ["batch"]})
        return {
            "family": self.family,
            "inputs": inputs,
            "latent": {"layout": "packed-2x2", "channels": int(source.pipeline.vae.config.latent_channels)},
            "prediction": "flow",
            "timestep_domain": [0, 1],
            "timestep_input_divisor": int(source.pipeline.scheduler.config.num_train_timesteps),
            "guidance": "embedded" if self.embeds_guidance(model) else "none",
            "scheduler_family": "flow-matching",
            "sigmas": "linear",
            "text_encoders": encoders,
        }


    @contextmanager
    def tracing(self):
        """diffusers' rotary embedding in a form whose token count stays dynamic when traced (whichever attention
        form is exported)."""
        from diffusers.models.transformers import transformer_flux

        from sdopt.backbones.attention import rotary

        def traceable(x, freqs_cis, use_real=True, use_real_unbind_dim=-1, sequence_dim=2):
            if not use_real or use_real_unbind_dim != -1 or sequence_dim != 1:
                return original(x, freqs_cis, use_real, use_real_unbind_dim, sequence_dim)
            return rotary(x, *freqs_cis)

        original = transformer_flux.apply_rotary_emb
        transformer_flux.apply_rotary_emb = traceable
        try:
            yield
        finally:
            transformer_flux.apply_rotary_emb = original


FLUX = FluxBackbone()
register(FLUX)
