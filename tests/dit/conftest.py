"""Tiny transformer-generation pipelines (SD3 / SD3.5 MMDiT, flow matching) saved as local diffusers folders."""

import pytest

WORDS = "a red green blue circle square triangle left right top bottom of the in on".split()


def tiny_t5(d_model: int):
    from transformers import T5Config, T5EncoderModel

    from sdopt.contract.tokenizer_files import t5_tokenizer

    pieces = [("▁" + w, -5.0) for w in WORDS] + [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz▁"]
    encoder = T5EncoderModel(T5Config(vocab_size=64, d_model=d_model, d_ff=37, d_kv=8, num_layers=2,
                                      num_heads=4)).eval()
    return encoder, t5_tokenizer(pieces, model_max_length=512)


def tiny_clip(tokenizer, hidden: int = 32, projection: bool = True):
    """A toy CLIP text encoder, with projection (SD3) or without (FLUX)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=77, pad_token_id=1, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, hidden_act="gelu", projection_dim=hidden)).eval()


def tiny_vae(levels: int = 2):
    """A VAE with 4 latent channels and the shift factor SD3 and FLUX have; 2**(levels - 1) pixels per latent."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32] * levels, layers_per_block=1, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * levels,
                         up_block_types=["UpDecoderBlock2D"] * levels,
                         norm_num_groups=32, scaling_factor=1.5, shift_factor=0.06, use_quant_conv=False,
                         use_post_quant_conv=False).eval()


def sd3_pipeline(t5: bool = True, sd35: bool = False):
    """SD3 layout at toy width: two CLIPs with projection (pooled 64), T5 (or none), 2 joint blocks; SD3.5's
    RMS qk-norm and a dual-attention block with `sd35`."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    from sdopt.sources.source import stand_in_tokenizer

    torch.manual_seed(0)
    tokenizer, tokenizer_2 = stand_in_tokenizer(), stand_in_tokenizer(pad_token="!")
    extra = dict(qk_norm="rms_norm", dual_attention_layers=(0,)) if sd35 else {}
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                                        caption_projection_dim=32, pooled_projection_dim=64, out_channels=4,
                                        pos_embed_max_size=64, **extra).eval()
    text_encoder_3, tokenizer_3 = tiny_t5(64) if t5 else (None, None)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_vae(),
        text_encoder=tiny_clip(tokenizer), tokenizer=tokenizer, text_encoder_2=tiny_clip(tokenizer_2),
        tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)


def _saved(tmp_path_factory, name, pipe):
    folder = tmp_path_factory.mktemp(name)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sd3_folder(tmp_path_factory):
    return _saved(tmp_path_factory, "sd3-tiny", sd3_pipeline())


@pytest.fixture(scope="session")
def sd3_no_t5_folder(tmp_path_factory):
    return _saved(tmp_path_factory, "sd3-tiny-no-t5", sd3_pipeline(t5=False))


@pytest.fixture(scope="session")
def sd35_folder(tmp_path_factory):
    return _saved(tmp_path_factory, "sd35-tiny", sd3_pipeline(sd35=True))


@pytest.fixture(scope="session")
def sd3_fp32(sd3_folder, tmp_path_factory):
    from sdopt.app.cli import main

    out = tmp_path_factory.mktemp("artifacts") / "sd3-fp32"
    assert main(["compress", "--model", str(sd3_folder), "--out", str(out)]) == 0
    return out


def flux_pipeline(dev: bool = True):
    """FLUX.1 layout at toy width: CLIP (pooled 32), T5, one double- and one single-stream block, rotary axes
    (2, 2, 4), a VAE of factor 8 (images in multiples of 16 pixels); dev embeds the guidance scale and shifts its
    schedule by the image size, schnell does neither."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdopt.sources.source import stand_in_tokenizer

    torch.manual_seed(0)
    tokenizer = stand_in_tokenizer()
    clip = tiny_clip(tokenizer, projection=False)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=dev,
                                         axes_dims_rope=(2, 2, 4)).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0, base_image_seq_len=256,
                                                max_image_seq_len=4096, base_shift=0.5, max_shift=1.15) if dev \
        else FlowMatchEulerDiscreteScheduler(shift=1.0)
    t5, t5_tokenizer = tiny_t5(32)
    return FluxPipeline(transformer=transformer, scheduler=scheduler, vae=tiny_vae(levels=4), text_encoder=clip,
                        tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=t5_tokenizer)


@pytest.fixture(scope="session")
def flux_dev_folder(tmp_path_factory):
    return _saved(tmp_path_factory, "flux-dev-tiny", flux_pipeline())


@pytest.fixture(scope="session")
def flux_schnell_folder(tmp_path_factory):
    return _saved(tmp_path_factory, "flux-schnell-tiny", flux_pipeline(dev=False))
