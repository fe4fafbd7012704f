"""img2img and inpainting: what the detector reads back on tiny-shapes, and parity with diffusers'
StableDiffusionImg2ImgPipeline / StableDiffusionInpaintPipeline on the same inputs (diffusers made to take
the VAE posterior's mean and this runtime's noise, the two things it would otherwise draw from torch)."""

import numpy as np
import pytest
import torch
from PIL import Image

from sdopt.app.cli import main
from sdopt.reference.tinyshapes.detect import detect, matches
from sdopt.reference.tinyshapes.render import BACKGROUND, render
from sdopt.runtime.pipeline import Pipeline

SOURCES = ["a large red circle in the top left", "a small blue square in the bottom left",
           "a large yellow triangle in the top right", "a small white diamond in the center"]


@pytest.fixture(scope="module")
def tinyshapes(tinyshapes_fp32):
    return Pipeline(tinyshapes_fp32)


@pytest.mark.parametrize("caption", SOURCES)
def test_img2img_keeps_its_own_prompt(tinyshapes, caption):
    image = render(caption, seed=1)
    out = tinyshapes(caption, image=image, strength=0.3, seed=2, steps=25, guidance=2.0).image
    assert all(matches(caption, out).values()), detect(out)


def test_img2img_follows_a_new_prompt_at_high_strength(tinyshapes):
    image = render("a large red circle in the top left", seed=1)
    out = tinyshapes("a large blue circle in the top left", image=image, strength=0.8, seed=2, steps=25,
                     guidance=2.0).image
    assert detect(out)["color"] == "blue"


@pytest.mark.parametrize("prompt", ["a small green square in the bottom right",
                                    "a large cyan circle in the bottom right",
                                    "a small purple triangle in the bottom right"])
def test_inpainting_puts_the_object_in_the_masked_quadrant(tinyshapes, prompt):
    image = render("a large red circle in the top left", seed=1)
    mask = np.zeros((32, 32), np.uint8)
    mask[16:, 16:] = 255
    out = tinyshapes(prompt, image=image, mask=mask, seed=3, steps=25, guidance=2.0).image
    inside = np.full_like(out, BACKGROUND)
    inside[16:, 16:] = out[16:, 16:]  # the repainted quadrant alone, on the background
    found = detect(inside)
    words = prompt.split()
    assert (found["color"], found["shape"], found["position"]) == (words[2], words[3], "bottom right"), found
    outside = np.abs(out[:16].astype(int) - image[:16].astype(int)).mean()
    assert outside < 12  # the kept half: the VAE's round trip, no new object


def test_cli_img2img_and_inpainting(tinyshapes_fp32, tmp_path, capsys):
    source, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.fromarray(render("a large red circle in the top left", seed=1)).save(source)
    Image.fromarray(np.pad(np.full((16, 16), 255, np.uint8), ((16, 0), (16, 0)))).save(mask)
    out = tmp_path / "out.png"
    assert main(["run", str(tinyshapes_fp32), "--prompt", "a large red circle in the top left", "--image",
                 str(source), "--strength", "0.3", "--out", str(out)]) == 0
    assert detect(np.asarray(Image.open(out).convert("RGB")))["color"] == "red"
    assert Image.open(out).text["strength"] == "0.3"
    assert main(["run", str(tinyshapes_fp32), "--prompt", "a small green square in the bottom right", "--image",
                 str(source), "--mask", str(mask), "--out", str(out)]) == 0
    assert main(["run", str(tinyshapes_fp32), "--prompt", "x", "--mask", str(mask), "--out", str(out)]) == 2
    assert "--mask needs --image" in capsys.readouterr().err


def _patch_diffusers_draws(monkeypatch, module, noise):
    """The image latents from the posterior's mean, the noise from this runtime's generator."""
    monkeypatch.setattr(module, "retrieve_latents",
                        lambda output, generator=None, sample_mode="sample": output.latent_dist.mode())
    monkeypatch.setattr(module, "randn_tensor", lambda shape, **_: torch.from_numpy(noise).reshape(shape))


def _diffusers_image(pipe, **kwargs):
    with torch.no_grad():
        image = pipe(num_inference_steps=6, guidance_scale=4.0, output_type="np", **kwargs).images[0]
    return (image * 255).round().astype(np.uint8)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp"])
def test_img2img_matches_diffusers(sd21_folder, tmp_path, monkeypatch, scheduler):
    import diffusers
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as module

    from sdopt.contract.sampling import SCHEDULERS

    artifact = tmp_path / "fp32"
    assert main(["compress", "--model", str(sd21_folder), "--out", str(artifact)]) == 0
    ours_pipe = Pipeline(artifact)
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    noise = ours_pipe.initial_noise(5, 64, 64)
    ours = ours_pipe("a red circle", image=image, strength=0.6, seed=5, steps=6, guidance=4.0, scheduler=scheduler)
    _patch_diffusers_draws(monkeypatch, module, noise)
    pipe = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(sd21_folder, safety_checker=None,
                                                                    requires_safety_checker=False)
    pipe.scheduler = getattr(diffusers, SCHEDULERS[scheduler]).from_config(pipe.scheduler.config)
    reference = _diffusers_image(pipe, prompt="a red circle", image=Image.fromarray(image), strength=0.6)
    assert np.abs(ours.image.astype(int) - reference.astype(int)).max() <= 1


@pytest.mark.parametrize("folder, strength", [("sd21_folder", 1.0), ("sd21_folder", 0.5), ("sd_inpaint_folder", 1.0)])
def test_inpainting_matches_diffusers(request, tmp_path, monkeypatch, folder, strength):
    import diffusers
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_inpaint as module

    folder = request.getfixturevalue(folder)
    artifact = tmp_path / "fp32"
    assert main(["compress", "--model", str(folder), "--out", str(artifact)]) == 0
    ours_pipe = Pipeline(artifact)
    rng = np.random.default_rng(1)
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 24:64] = 255
    noise = ours_pipe.initial_noise(7, 64, 64)
    ours = ours_pipe("a blue square", image=image, mask=mask, strength=strength, seed=7, steps=6, guidance=4.0)
    _patch_diffusers_draws(monkeypatch, module, noise)
    pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(folder, safety_checker=None,
                                                                    requires_safety_checker=False)
    reference = _diffusers_image(pipe, prompt="a blue square", image=Image.fromarray(image),
                                 mask_image=Image.fromarray(mask), strength=strength, height=64, width=64)
    assert np.abs(ours.image.astype(int) - reference.astype(int)).max() <= 1
