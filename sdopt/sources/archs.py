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
