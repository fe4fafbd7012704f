"""Shared fixtures: tiny SD-family pipelines saved as local diffusers folders (random weights)."""

import warnings

import pytest

warnings.filterwarnings("ignore")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Calibration records and reference artifacts are cached under $SDOPT_CACHE: one per test session."""
    import os

    previous = os.environ.get("SDOPT_CACHE")
    os.environ["SDOPT_CACHE"] = str(tmp_path_factory.mktemp("sdopt-cache"))
    yield
    if previous is None:
        os.environ.pop("SDOPT_CACHE", None)
    else:
        os.environ["SDOPT_CACHE"] = previous


def _text_encoder(cls, hidden, tokenizer, projection_dim=32):
    from transformers import CLIPTextConfig

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            hidden_act="gelu", projection_dim=projection_dim,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return cls(config).eval()


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 32, 64, 64], layers_per_block=1, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                         norm_num_groups=32).eval()


def _scheduler(prediction_type="epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)


@pytest.fixture(scope="session")
def sd21_folder(tmp_path_factory):
    """SD2.1-style: linear projections in attention, per-level head dims, v-prediction, '!' padding."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from sdopt.sources.source import stand_in_tokenizer

    torch.manual_seed(1)
    tokenizer = stand_in_tokenizer(pad_token="!")
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=[32, 64], layers_per_block=1,
                                cross_attention_dim=32, attention_head_dim=[2, 4], use_linear_projection=True,
                                down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=_text_encoder(CLIPTextModel, 32, tokenizer),
                                   tokenizer=tokenizer, unet=unet, scheduler=_scheduler("v_prediction"),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folder = tmp_path_factory.mktemp("sd21-tiny")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory):
    """SDXL-style: two text encoders (penultimate hidden states, pooled projection), added time ids."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from sdopt.sources.source import stand_in_tokenizer

    torch.manual_seed(2)
    tokenizer, tokenizer_2 = stand_in_tokenizer(), stand_in_tokenizer(pad_token="!")
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=[32, 64], layers_per_block=1,
                                cross_attention_dim=64, attention_head_dim=[2, 4], use_linear_projection=True,
                                transformer_layers_per_block=[1, 2],
                                down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                                up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=8 * 6 + 32)
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=_text_encoder(CLIPTextModel, 32, tokenizer),
                                     text_encoder_2=_text_encoder(CLIPTextModelWithProjection, 32, tokenizer_2),
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet,
                                     scheduler=_scheduler())
    folder = tmp_path_factory.mktemp("sdxl-tiny")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sd_inpaint_folder(tmp_path_factory):
    """An inpainting pipeline: the UNet takes latents, mask and masked-image latents (9 channels)."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from sdopt.sources.source import stand_in_tokenizer

    torch.manual_seed(3)
    tokenizer = stand_in_tokenizer()
    unet = UNet2DConditionModel(sample_size=8, in_channels=9, out_channels=4, block_out_channels=[32, 64],
                                layers_per_block=1, cross_attention_dim=32, attention_head_dim=[2, 4],
                                down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])
    pipe = StableDiffusionInpaintPipeline(vae=_vae(), text_encoder=_text_encoder(CLIPTextModel, 32, tokenizer),
                                          tokenizer=tokenizer, unet=unet, scheduler=_scheduler(),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folder = tmp_path_factory.mktemp("sd-inpaint-tiny")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tinyshapes_fp32(tmp_path_factory):
    """The reference model (tiny-shapes) exported as an fp32 artifact through the CLI."""
    from sdopt.app.cli import main

    out = tmp_path_factory.mktemp("artifacts") / "tinyshapes-fp32"
    assert main(["compress", "--model", "tiny-shapes", "--recipe", "fp32", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_fp32(tmp_path_factory):
    """arch:tiny exported as an fp32 artifact through the CLI."""
    from sdopt.app.cli import main

    out = tmp_path_factory.mktemp("artifacts") / "tiny-fp32"
    assert main(["compress", "--model", "arch:tiny", "--recipe", "fp32", "--out", str(out)]) == 0
    return out
