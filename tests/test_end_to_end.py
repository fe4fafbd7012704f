"""`sdopt compress` (fp32) -> `sdopt run` reproduces the diffusers pipeline's image."""

import numpy as np
import pytest
import torch
from PIL import Image

from sdopt.app.cli import main
from sdopt.app.evaluate import psnr
from sdopt.runtime.pipeline import Pipeline
from sdopt.sources.source import load_source

PROMPT = "a red circle above a blue square"


def diffusers_image(model: str, noise: np.ndarray, scheduler: str, steps: int, guidance: float, size: int):
    import diffusers

    from sdopt.contract.sampling import SCHEDULERS

    pipe = load_source(model).pipeline
    pipe.scheduler = getattr(diffusers, SCHEDULERS[scheduler]).from_config(pipe.scheduler.config)
    with torch.no_grad():
        image = pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                     latents=torch.from_numpy(noise), output_type="np").images[0]
    return (image * 255).round().astype(np.uint8)


def _compress(model, out):
    assert main(["compress", "--model", str(model), "--recipe", "fp32", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp"])
def test_run_reproduces_diffusers_tiny(tiny_fp32, tmp_path, scheduler):
    png = tmp_path / "out.png"
    assert main(["run", str(tiny_fp32), "--prompt", PROMPT, "--out", str(png), "--seed", "3", "--steps", "6",
                 "--guidance", "5", "--scheduler", scheduler]) == 0
    ours = np.asarray(Image.open(png).convert("RGB"))
    noise = Pipeline(tiny_fp32).initial_noise(3, 64, 64)
    reference = diffusers_image("arch:tiny", noise, scheduler, 6, 5.0, 64)
    assert ours.shape == reference.shape == (64, 64, 3)
    assert psnr(ours, reference) >= 40.0
    info = Image.open(png).info
    assert info["prompt"] == PROMPT and info["seed"] == "3" and info["recipe"] == "fp32"


@pytest.mark.parametrize("fixture", ["sd21_folder", "sdxl_folder"])
def test_run_reproduces_diffusers_folders(request, tmp_path, fixture):
    folder = request.getfixturevalue(fixture)
    artifact = _compress(folder, tmp_path / "artifact")
    png = tmp_path / "out.png"
    assert main(["run", str(artifact), "--prompt", PROMPT, "--out", str(png), "--seed", "1", "--steps", "5",
                 "--height", "64", "--width", "64"]) == 0
    ours = np.asarray(Image.open(png).convert("RGB"))
    noise = Pipeline(artifact).initial_noise(1, 64, 64)
    reference = diffusers_image(str(folder), noise, "ddim", 5, 7.5, 64)
    assert psnr(ours, reference) >= 40.0


def test_png_metadata_marks_random_weights(tiny_fp32, tmp_path):
    png = tmp_path / "x.png"
    assert main(["run", str(tiny_fp32), "--prompt", "x", "--out", str(png), "--steps", "2"]) == 0
    assert Image.open(png).info["random_weights"] == "True"
