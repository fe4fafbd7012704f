"""The MMDiT family: SD3Transformer2DModel (Stable Diffusion 3 and 3.5, flow matching).

The denoiser takes the latents (B, 16, h, w), the timestep sigma * 1000, the text tokens (CLIP-L and CLIP-G
side by side, padded to T5's width, then T5's tokens) and the pooled CLIP projections; it predicts the flow
velocity. Graph I/O names are Optimum's (`sd3-transformer-2d`), so its ORT and OpenVINO pipelines load the graph.

The quantize pass knows this family (its skip lists below; calibration on the pipeline's own trajectories). Passes
that need a block map (caching, pruning, distillation, few-step students) do not know it yet: they refuse it before
any work (the families a pass declares, `compress.registry.Pass`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from sdopt.backbones.component import PipelineComponent
from sdopt.backbones.registry import register
from sdopt.contract.graphs import TRANSFORMER_OUTPUT as OUTPUT

LATENT, TIMESTEP, TEXT, POOLED = "hidden_states", "timestep", "encoder_hidden_states", "pooled_projections"


class MMDiTBackbone(PipelineComponent):
    family = "mmdit"
    handles = ("SD3Transformer2DModel",)
    component = "transformer"
    latent_input, timestep_input, text_input, pooled_input = LATENT, TIMESTEP, TEXT, POOLED
    guidance_input = None
    graph_scope = "/transformer/"
    # kept in floating point by the quantize pass (ModelOpt's filters for SD3 and FLUX): the patch, text and
    # timestep embedders, the final norm and the final projection (a small share of the compute, a large one of
    # the quantization error)
    quantization_skip = ("pos_embed", "x_embedder", "context_embedder", "time_text_embed", "norm_out", "proj_out")
    # the adaLN modulation: linear maps of the timestep embedding, whose ranges move from step to step
    time_embedding_layers = ("norm1.linear", "norm1_context.linear")

    # --- the denoiser in its pipeline (denoiser, replace, latent_channels_in: PipelineComponent)
    def takes_masked_image(self, source) -> bool:
        return False

    def embeds_guidance(self, model) -> bool:
        return False

    # --- calling it
    def call(self, model, inputs: dict):
        return model(hidden_states=inputs[LATENT], timestep=inputs[TIMESTEP], encoder_hidden_states=inputs[TEXT],
                     pooled_projections=inputs[POOLED], return_dict=False)[0]

    def call_inputs(self, args: tuple, kwargs: dict) -> dict:
        named = dict(zip((LATENT, TEXT, POOLED, TIMESTEP), args))
        named.update({k: kwargs[k] for k in (LATENT, TEXT, POOLED, TIMESTEP) if k in kwargs})
        latent = named[LATENT]
        named[TIMESTEP] = torch.as_tensor(named[TIMESTEP], dtype=torch.float32).reshape(-1).expand(latent.shape[0])
        return named

    def timestep_argument(self, args: tuple, kwargs: dict):
        return kwargs[TIMESTEP] if TIMESTEP in kwargs else args[3]

    def inputs(self, latent, timestep, text, pooled=None) -> dict:
        return {LATENT: latent, TIMESTEP: timestep, TEXT: text, POOLED: pooled}

    def timestep_range(self, source) -> int:
        """sigma * num_train_timesteps, sigma in [0, 1]."""
        return int(source.pipeline.scheduler.config.num_train_timesteps)

    def example_inputs(self, source, batch: int = 2, latent_hw: tuple[int, int] | None = None) -> dict:
        model = self.denoiser(source.pipeline)
        h, w = latent_hw or (2 * model.config.patch_size,) * 2
        g = torch.Generator().manual_seed(0)
        return {
            LATENT: torch.randn(batch, model.config.in_channels, h, w, generator=g),
            TEXT: torch.randn(batch, 7, model.config.joint_attention_dim, generator=g),
            POOLED: torch.randn(batch, model.config.pooled_projection_dim, generator=g),
            TIMESTEP: torch.full((batch,), 500.0),
        }

    # --- export
    def denoiser_graph(self, source):
        from sdopt.contract.graphs import DENOISER, GraphSpec

        inputs = self.example_inputs(source)
        image = {0: "batch", 2: "height", 3: "width"}
        axes = {LATENT: image, TEXT: {0: "batch", 1: "tokens"}, POOLED: {0: "batch"}, TIMESTEP: {0: "batch"},
                OUTPUT: image}
        module = self.graph_module(self.denoiser(source.pipeline), inputs)
        return GraphSpec(self.component, DENOISER, self.component, module, inputs, [OUTPUT], axes,
                         scope=self.graph_scope)

    def graph_module(self, model, names):
        return _GraphTransformer(self, model, names)

    def default_sample_size(self, model) -> int:
        """Latent side of the model's default image."""
        return int(model.config.sample_size)

    @contextmanager
    def tracing(self):
        """What the model needs changed while it is traced: nothing."""
        yield

    def latent_size_multiple(self, model) -> int:
        return int(model.config.patch_size)

    def attention_downsample(self, model) -> int | None:
        """Latent pixels per image token side (one token per patch)."""
        return int(model.config.patch_size)

    def denoiser_spec(self, source, components: dict) -> dict:
        from sdopt.contract.graphs import prompt_output

        pipe, model = source.pipeline, self.denoiser(source.pipeline)
        encoders = []
        for encoder in source.text_encoder_graphs():
            outputs = [o["name"] for o in components[encoder.name]["outputs"]]
            encoders.append({"graph": encoder.name, "tokenizer": encoder.tokenizer_folder, "kind": encoder.kind,
                             "max_length": encoder.max_length, "output": prompt_output(outputs),
                             "combine": "sequence" if encoder.kind == "t5" else "concat-features"})
        spec = {
            "family": self.family,
            "inputs": [{"name": LATENT, "role": "latent", "axes": ["batch", "channels", "height", "width"]},
                       {"name": TIMESTEP, "role": "timestep", "axes": ["batch"]},
                       {"name": TEXT, "role": "text", "axes": ["batch", "tokens", "features"]},
                       {"name": POOLED, "role": "pooled_text", "axes": ["batch", "features"]}],
            "latent": {"layout": "nchw", "channels": int(pipe.vae.config.latent_channels)},
            "prediction": "flow",
            "timestep_domain": [0, self.timestep_range(source)],
            "guidance": "classifier-free",
            "scheduler_family": "flow-matching",
            "text_encoders": encoders,
            "text_width": int(model.config.joint_attention_dim),
        }
        if not any(e["kind"] == "t5" for e in encoders):  # diffusers' text_encoder_3=None: zeros in T5's place
            spec["absent_text_tokens"] = source.t5_max_length
        return spec


class _GraphTransformer(torch.nn.Module):
    """The transformer called with its graph inputs in `names`' order: what the exporter traces."""

    def __init__(self, backbone, transformer, names):
        super().__init__()
        self.backbone, self.transformer, self.names = backbone, transformer, tuple(names)

    def forward(self, *tensors):
        with self.backbone.tracing():
            return self.backbone.call(self.transformer, dict(zip(self.names, tensors)))


MMDIT = MMDiTBackbone()
register(MMDIT)
