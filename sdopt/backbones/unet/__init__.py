"""The UNet family: UNet2DConditionModel (SD1.x, SD2.x, SDXL, inpainting, LCM students).

Everything the passes and the exporter need to know about this denoiser is answered here; the modules beside
this one hold the longer parts (the call convention, DeepCache's split, Q-Diffusion's shortcut split, the
block structure that pruning and feature distillation use).
"""

from __future__ import annotations

from sdopt.backbones.component import PipelineComponent
from sdopt.backbones.registry import register
from sdopt.backbones.unet import convention
from sdopt.contract.denoiser_spec import unet_spec

# Layers that stay in floating point (as ModelOpt's diffusion recipe): the first and last convs and the 1x1
# shortcut convs carry the signal where quantization error costs the most.
QUANTIZATION_SKIP = ("conv_in", "conv_out", "conv_shortcut", "add_embedding")
# The time embedding and its per-block projections see tiny, timestep-dependent inputs (TFMQ-DM keeps them in
# higher precision).
TIME_EMBEDDING = ("time_embedding", "time_emb_proj")


class UNetBackbone(PipelineComponent):
    family = "unet"
    handles = ("UNet2DConditionModel",)
    component = "unet"  # the pipeline attribute holding the denoiser, and its graph's folder in the artifact
    latent_input, timestep_input, text_input = convention.LATENT, convention.TIMESTEP, convention.TEXT
    guidance_input = convention.GUIDANCE  # a student's embedded guidance scale (LCM)
    graph_scope = "/unet/"  # node-name prefix of the model's layers in the traced graph (the wrapper's attribute)
    quantization_skip = QUANTIZATION_SKIP
    time_embedding_layers = TIME_EMBEDDING

    # --- the denoiser in its pipeline (denoiser, replace, latent_channels_in: PipelineComponent)
    def takes_masked_image(self, source) -> bool:
        """An inpainting model: it takes mask and masked-image latents beside the latents."""
        return self.latent_channels_in(source.pipeline.unet) != source.pipeline.vae.config.latent_channels

    def embeds_guidance(self, model) -> bool:
        return bool(model.config.time_cond_proj_dim)

    # --- calling it
    def call(self, model, inputs: dict):
        """The model's prediction for graph inputs by name (extra keys are ignored)."""
        return convention.run_unet(model, inputs)

    def call_inputs(self, args: tuple, kwargs: dict) -> dict:
        """A call's arguments (as the pipeline makes it) by graph input name."""
        return convention.unet_call_inputs(args, kwargs)

    def timestep_argument(self, args: tuple, kwargs: dict):
        return convention.timestep_argument(args, kwargs)

    def inputs(self, latent, timestep, text, guidance=None) -> dict:
        """Graph inputs by name from their roles (SD1.x / SD2.x conditioning)."""
        named = {self.latent_input: latent, self.timestep_input: timestep, self.text_input: text}
        if guidance is not None:
            named[self.guidance_input] = guidance
        return named

    def timestep_range(self, source) -> int:
        """The timestep input's domain is [0, this): the training timesteps (timestep intervals split it)."""
        return int(source.pipeline.scheduler.config.num_train_timesteps)

    def example_inputs(self, source, batch: int = 2, latent_hw: tuple[int, int] | None = None) -> dict:
        return convention.example_inputs(source, batch, latent_hw)

    # --- export
    def denoiser_graph(self, source):
        """The pipeline's denoiser as the exporter traces it: example inputs, outputs and dynamic axes."""
        from sdopt.contract.graphs import DENOISER, NOISE_OUTPUT, GraphSpec

        inputs = self.example_inputs(source)
        axes = {name: {0: "batch"} for name in inputs}
        axes[self.latent_input] = axes[NOISE_OUTPUT[0]] = {0: "batch", 2: "height", 3: "width"}
        module = self.graph_module(self.denoiser(source.pipeline), inputs)
        return GraphSpec(self.component, DENOISER, self.component, module, inputs, [NOISE_OUTPUT[0]], axes,
                         scope=self.graph_scope)

    def graph_module(self, model, names):
        """A module whose forward takes the graph inputs in `names`' order: what the exporter traces."""
        return convention.GraphUNet(model, names)

    def latent_size_multiple(self, model) -> int:
        return convention.unet_latent_multiple(model)

    def default_sample_size(self, model) -> int:
        """Latent side of the model's default image."""
        return int(model.config.sample_size)

    def attention_downsample(self, model) -> int | None:
        return convention.attention_downsample(model.config)

    def denoiser_spec(self, source, components: dict) -> dict:
        """The manifest's denoiser spec from the exported graphs (`components`: name -> record with role, inputs
        and outputs) and the source pipeline."""
        pipe = source.pipeline
        return unet_spec(components, pipe.vae.config.latent_channels, dict(pipe.scheduler.config),
                         source.tokenizers[0].model_max_length)

    # --- quantization
    def split_shortcuts(self, model, run_once) -> list[str]:
        """Q-Diffusion's split of the concatenated skip inputs of up-block convolutions; the replaced names."""
        from sdopt.backbones.unet.shortcuts import split_skip_convs

        return split_skip_convs(model, run_once)

    # --- feature caching (DeepCache)
    def check_feature_cache(self, model, branch: int) -> None:
        """Refuses, in one line, a cache branch past the model's blocks (DeepCache's `cache_branch_id`)."""
        from sdopt.backbones.unet.deepcache import boundary

        boundary(model, branch)

    def feature_cache_split(self, model, branch: int):
        """DeepCache's split at `branch` (`deepcache.Split`): the full module, returning (noise prediction,
        cache feature), and the shallow one, taking the full one's inputs then the feature; the boundary
        layer's name and the node-name scope of the model's layers in both traced graphs."""
        from sdopt.backbones.unet.deepcache import split

        sdxl = getattr(model.config, "addition_embed_type", None) == "text_time"  # takes SDXL's added conditions
        return split(model, branch, sdxl)

    # --- structured pruning and feature distillation (BK-SDM; the prune and distill passes)
    def pruned_config(self, model, preset: str) -> dict:
        """The diffusers config of `model` less the blocks a preset (none, base, small, tiny) removes; a preset
        the model cannot take is one error."""
        from sdopt.backbones.unet.blocks import diffusers_config, student_config

        return student_config(diffusers_config(model), preset)

    def remove_blocks(self, model, preset: str):
        """(the model built from `pruned_config`, initialised from `model`'s kept blocks, {"copied": n,
        "initialised": n} parameter counts)."""
        from sdopt.backbones.unet.blocks import remove_blocks

        return remove_blocks(model, preset)

    def resnet_blocks(self, model) -> dict:
        """Name -> the ResNet blocks whose inner width channel pruning may narrow (`conv1`'s outputs, `norm2`,
        `conv2`'s inputs, `time_emb_proj`)."""
        from sdopt.backbones.unet.blocks import resnet_blocks

        return resnet_blocks(model)

    def stage_features(self, model, found: dict) -> list:
        """Forward hooks that record each stage's output into `found` under the stage's name; the handles."""
        from sdopt.backbones.unet.blocks import stage_features

        return stage_features(model, found)

    def shared_stages(self, teacher, student) -> dict[str, str]:
        """Student stage -> the teacher's stage with the same role (a pruned student's against its teacher)."""
        from sdopt.backbones.unet.blocks import shared_stages

        return shared_stages(teacher, student)

    # --- consistency students (the lcm pass)
    @property
    def lora_targets(self) -> tuple[str, ...]:
        """The module names an LCM-LoRA adapts (peft's `target_modules`)."""
        from sdopt.backbones.unet.student import LORA_TARGETS

        return LORA_TARGETS

    def guidance_student(self, model, embedding_dim: int):
        """`model` with a zero-initialised guidance embedding of `embedding_dim` (the `guidance_input`) added to
        its time embedding: the same outputs."""
        from sdopt.backbones.unet.student import guidance_student

        return guidance_student(model, embedding_dim)

    def save_lora(self, pipe, folder: str, state: dict) -> None:
        """The denoiser's adapters (peft keys) saved in diffusers' LoRA format into `folder`."""
        from sdopt.backbones.unet.student import save_lora

        save_lora(pipe, folder, state)


UNET = UNetBackbone()
register(UNET)
