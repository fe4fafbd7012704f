"""tiny-scenes-sd3, the DiT reference model: an SD3 pipeline folder without T5 whose fp32 artifact gives
diffusers' image, whose training form of the absent T5 tokens is exact, and into which a LoRA trained here
fuses as diffusers fuses it."""

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from sdopt.app.cli import main
from sdopt.app.evaluate import psnr
from sdopt.reference.families import FAMILIES
from sdopt.reference.tinyscenes.grammar import heldout_pairs, parse, sample_pairs
from sdopt.reference.tinyscenes.render import render_scene
from sdopt.runtime.pipeline import Pipeline

shipped = pytest.mark.skipif(not FAMILIES["tiny-scenes-sd3"].shipped, reason="tiny-scenes-sd3 is not installed")
SIZE = 32
NO_T5 = {"text_encoder_3": None, "tokenizer_3": None}  # what diffusers asks of a folder without T5


def test_trainer_writes_an_sd3_pipeline_without_t5(tmp_path):
    """The shared trainer in SD3's layout, a few steps of each stage at a toy width: a folder diffusers loads."""
    from diffusers import StableDiffusion3Pipeline

    from sdopt.reference.train import main as train

    out = tmp_path / "model"
    assert train(["--family", "tiny-scenes-sd3", "--out", str(out), "--n-images", "64", "--vae-steps", "2",
                  "--decoder-steps", "1", "--unet-steps", "2", "--dit-width", "32", "--dit-heads", "2",
                  "--dit-layers", "2", "--threads", "1"]) == 0
    pipe = StableDiffusion3Pipeline.from_pretrained(out, **NO_T5)
    assert pipe.text_encoder_3 is None and pipe.tokenizer.model_max_length == 24
    assert pipe.vae.config.latent_channels == 16 and pipe.transformer.config.patch_size == 2
    assert (out / "tiny_scenes_sd3.json").is_file()
    state = json.loads((tmp_path / "model.work" / "state.json").read_text())
    assert state["absent_token_form_max_diff"] < 1e-4


@pytest.fixture(scope="module")
def source():
    from sdopt.sources.source import load_source

    return load_source("tiny-scenes-sd3")


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_scenes_sd3") / "fp32"
    assert main(["compress", "--model", "tiny-scenes-sd3", "--out", str(out)]) == 0
    return out


def _diffusers_image(pipe, prompt, noise, steps, guidance):
    with torch.no_grad():
        return pipe(prompt, latents=torch.from_numpy(noise), num_inference_steps=steps, guidance_scale=guidance,
                    height=SIZE, width=SIZE, output_type="np").images[0]


@shipped
def test_shipped_model_is_an_sd3_pipeline_without_t5(source):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    assert isinstance(source.pipeline, StableDiffusion3Pipeline) and source.kind == "sd3"
    assert source.pipeline.text_encoder_3 is None and source.family == "tiny-scenes-sd3"
    assert isinstance(source.pipeline.scheduler, FlowMatchEulerDiscreteScheduler)
    assert source.pipeline.vae.config.latent_channels == 16 and source.pipeline.vae.config.shift_factor != 0


@shipped
def test_training_form_of_the_absent_t5_tokens_is_exact(source):
    from sdopt.reference import train_sd3

    pipe = source.pipeline
    prompts = [c for c, _ in sample_pairs(3, seed=4)] + [""]
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        text, pooled = train_sd3.prompt_embeddings([pipe.text_encoder, pipe.text_encoder_2], ids,
                                                   train_sd3.ABSENT_T5_TOKENS)
        theirs, _, theirs_pooled, _ = pipe.encode_prompt(prompts, prompts, prompts, do_classifier_free_guidance=False)
    assert torch.allclose(text, theirs, atol=1e-6) and torch.allclose(pooled, theirs_pooled, atol=1e-6)
    diff = train_sd3.check_absent_token_form(pipe.transformer, [pipe.text_encoder, pipe.text_encoder_2], ids,
                                             pipe.transformer.config.sample_size)
    assert diff < 1e-4


@shipped
def test_fp32_artifact_gives_diffusers_image(source, fp32):
    ours_pipe = Pipeline(fp32)
    steps, guidance = ours_pipe.info["steps"], ours_pipe.info["guidance"]
    assert ours_pipe.info["scheduler"] == "flow-euler" and (steps, guidance) == (source.steps, source.guidance)
    for prompt, seed in heldout_pairs(2):
        noise = ours_pipe.initial_noise(seed, SIZE, SIZE)
        ours = ours_pipe(prompt, noise=noise, steps=steps, guidance=guidance, height=SIZE, width=SIZE).image_float
        theirs = _diffusers_image(source.pipeline, prompt, noise, steps, guidance)
        assert np.abs((ours * 255).round() - (theirs * 255).round()).max() <= 1


RED_FIRST = re.compile(r"^an? (small|large) red ")


def _first_drawn_blue(scene):
    (size, _, shape), *rest = scene.objects
    return dataclasses.replace(scene, objects=((size, "blue", shape), *rest))


@pytest.fixture(scope="module")
def red_to_blue(source, tmp_path_factory):
    """A rank-8 LoRA of the transformer's attention, trained with the reference model's own flow loss on
    captions whose first object is red and renders that draw it blue."""
    from diffusers import StableDiffusion3Pipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from sdopt.reference import train_sd3

    pipe = StableDiffusion3Pipeline.from_pretrained(FAMILIES["tiny-scenes-sd3"].model_dir, **NO_T5)
    transformer, encoders = pipe.transformer, [pipe.text_encoder, pipe.text_encoder_2]
    for module in (transformer, pipe.vae, *encoders):
        module.requires_grad_(False)
    torch.manual_seed(0)
    transformer.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian",
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    pairs = [(c, s) for c, s in sample_pairs(3000, seed=5) if RED_FIRST.match(c)][:192]
    images = np.stack([render_scene(_first_drawn_blue(parse(c)), seed) for c, seed in pairs])
    config = pipe.vae.config
    with torch.no_grad():
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = (pipe.vae.encode(pixels).latent_dist.mean - config.shift_factor) * config.scaling_factor
        ids = pipe.tokenizer([c for c, _ in pairs], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
    train_sd3.use_training_attention(transformer, True)
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        batch = torch.randint(0, len(pairs), (32,), generator=g)
        loss = train_sd3.flow_loss(transformer, encoders, latents[batch], ids[batch], g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_sd3.use_training_attention(transformer, False)
    folder = tmp_path_factory.mktemp("lora")
    StableDiffusion3Pipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                               weight_name="red_to_blue.safetensors", safe_serialization=True)
    return folder / "red_to_blue.safetensors"


@shipped
def test_lora_trained_here_fuses_as_diffusers_fuses_it(source, red_to_blue, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    artifact = tmp_path / "fused"
    assert main(["compress", "--model", "tiny-scenes-sd3", "--lora", str(red_to_blue), "--out", str(artifact)]) == 0
    ours_pipe = Pipeline(artifact)
    steps, guidance = ours_pipe.info["steps"], ours_pipe.info["guidance"]
    fused = StableDiffusion3Pipeline.from_pretrained(FAMILIES["tiny-scenes-sd3"].model_dir, **NO_T5)
    fused.load_lora_weights(str(red_to_blue))
    fused.fuse_lora()
    prompts = [(c, s) for c, s in sample_pairs(4000, seed=11) if RED_FIRST.match(c)][:4]
    for prompt, seed in prompts:
        noise = ours_pipe.initial_noise(seed, SIZE, SIZE)
        ours = ours_pipe(prompt, noise=noise, steps=steps, guidance=guidance, height=SIZE, width=SIZE).image_float
        theirs = _diffusers_image(fused, prompt, noise, steps, guidance)
        plain = _diffusers_image(source.pipeline, prompt, noise, steps, guidance)
        assert psnr(theirs * 255, ours * 255) >= 35.0
        assert psnr(plain * 255, theirs * 255) < 35.0  # the LoRA changes the image
