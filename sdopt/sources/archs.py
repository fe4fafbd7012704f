"""Configs of the real Stable Diffusion architectures, for `--model arch:NAME` (random weights).

The numbers are those of the public checkpoints' config files, so speed measured on a random-weight
model is the speed of the real one. `tiny` is a small SD1-shaped model for tests.
"""

from dataclasses import dataclass, field

SD_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu", projection_dim=768)
OPENCLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  hidden_act="gelu", projection_dim=512)
OPENCLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                     hidden_act="gelu", projection_dim=1280)

SD_VAE = dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              norm_num_groups=32, scaling_factor=0.18215)

SD1_UNET = dict(
    block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)


@dataclass(frozen=True)
class ArchSpec:
    kind: str  # "sd" (one text encoder) or "sdxl" (two, plus added time ids)
    unet: dict
    vae: dict
    text_encoders: tuple  # CLIPTextConfig kwargs, one per encoder
    height: int  # default image size in pixels
    scheduler: dict = field(default_factory=lambda: dict(SD_SCHEDULER))
    force_zeros_for_empty_prompt: bool = False


ARCHS = {
    "sd15": ArchSpec("sd", dict(SD1_UNET, sample_size=64), SD_VAE, (CLIP_L,), 512),
    "sd21": ArchSpec(
        "sd",
        dict(SD1_UNET, sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
             use_linear_projection=True),
        SD_VAE, (OPENCLIP_H,), 768, scheduler=dict(SD_SCHEDULER, prediction_type="v_prediction"),
    ),
    "sdxl": ArchSpec(
        "sdxl",
        dict(sample_size=128, block_out_channels=[320, 640, 1280], layers_per_block=2,
             down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
             transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20],
             cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
             addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816),
        dict(SD_VAE, scaling_factor=0.13025), (CLIP_L, OPENCLIP_BIGG), 1024,
        force_zeros_for_empty_prompt=True,
    ),
    "tiny": ArchSpec(
        "sd",
        dict(sample_size=8, block_out_channels=[32, 64, 64], layers_per_block=1, cross_attention_dim=32,
             attention_head_dim=8,
             down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
             up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
        dict(SD_VAE, block_out_channels=[32, 32, 64, 64], layers_per_block=1),
        (dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
              hidden_act="gelu", projection_dim=32),),
        64,
    ),
}


# --- the transformer generation (flow matching), `--model arch:sd3|sd35m`
FLOW_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}
SD3_VAE = dict(SD_VAE, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
               use_post_quant_conv=False)
CLIP_G = dict(OPENCLIP_BIGG, projection_dim=1280)
SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
SD35_MEDIUM = dict(SD3_MEDIUM, pos_embed_max_size=384, qk_norm="rms_norm", dual_attention_layers=tuple(range(13)))


FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
FLUX_VAE = dict(SD3_VAE, scaling_factor=0.3611, shift_factor=0.1159)
FLUX_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                  "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
# a T5 of T5-XXL's width (the transformer reads 4096 features) with one of its 24 layers and a narrow MLP
SMALL_T5 = dict(vocab_size=32128, d_model=4096, d_ff=1024, d_kv=64, num_heads=64, num_layers=1,
                feed_forward_proj="gated-gelu", is_gated_act=True)


@dataclass(frozen=True)
class DiTArchSpec:
    """A transformer denoiser's real width, heads and embeddings with fewer transformer blocks (`depth`: the config
    keys that set them; the full depth does not fit an fp32 export on the project's machines, and per-block costs
    scale), its VAE and CLIP encoders. T5-XXL (4.7 B parameters) does not fit either: SD3 runs without it, zeros in
    its place as diffusers' pipeline does without `text_encoder_3` (the denoiser reads as many text tokens);
    FLUX, which reads its prompt through T5 only, gets a small T5 of T5-XXL's width (`t5`)."""

    kind: str  # "sd3" or "flux"
    transformer: dict
    depth: dict  # the config's block counts as built here
    note: str  # what the source leaves out, said with everything made from it
    vae: dict
    text_encoders: tuple  # CLIPTextConfig kwargs, one per CLIP
    height: int
    scheduler: dict = field(default_factory=lambda: dict(FLOW_SCHEDULER))
    t5: dict | None = None  # T5Config kwargs


_SD3_NOTE = "4 of 24 transformer blocks; no T5 (zeros in its place, as diffusers without text_encoder_3)"
DIT_ARCHS = {
    "sd3": DiTArchSpec("sd3", SD3_MEDIUM, {"num_layers": 4}, _SD3_NOTE, SD3_VAE, (CLIP_L, CLIP_G), 1024),
    "sd35m": DiTArchSpec("sd3", SD35_MEDIUM, {"num_layers": 4}, _SD3_NOTE, SD3_VAE, (CLIP_L, CLIP_G), 1024),
    "flux": DiTArchSpec("flux", FLUX_DEV, {"num_layers": 2, "num_single_layers": 4},
                        "2 of 19 double-stream and 4 of 38 single-stream blocks; a 1-layer T5 of T5-XXL's width "
                        "(d_ff 1024)", FLUX_VAE, (CLIP_L,), 1024, FLUX_SCHEDULER, SMALL_T5),
}
