"""FLUX.1 dev and schnell folders end to end: packed latents, position ids, embedded guidance (dev) or none
(schnell), the image-size shift of dev's schedule; the numpy runtime gives diffusers' image for the same prompt,
noise (drawn unpacked, as for the UNet models), steps and guidance, at sizes other than the traced one."""

import json
import shutil

import numpy as np
import pytest
import torch
from sdopt.runtime.pipeline import Pipeline

from sdopt.app.cli import main
from sdopt.app.evaluate import psnr
from sdopt.contract.sampling import pack_latents

PROMPT, STEPS = "a red circle left of a blue square", 4


@pytest.fixture(scope="module")
def flux_dev_fp32(flux_dev_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "flux-dev-fp32"
    assert main(["compress", "--model", str(flux_dev_folder), "--out", str(out)]) == 0
    return out


def _diffusers_image(folder, noise, height, width, guidance):
    from diffusers import FluxPipeline

    with torch.no_grad():
        return FluxPipeline.from_pretrained(folder)(PROMPT, latents=torch.from_numpy(pack_latents(noise)),
                                                    num_inference_steps=STEPS, guidance_scale=guidance,
                                                    height=height, width=width, output_type="np").images[0]


def _levels(image_float):
    return (np.asarray(image_float) * 255).round()


@pytest.mark.parametrize("size", [(64, 64), (96, 64)])
def test_dev_gives_diffusers_image(flux_dev_folder, flux_dev_fp32, size):
    spec = json.loads((flux_dev_fp32 / "manifest.json").read_text())["pipeline"]["denoiser"]
    assert spec["latent"]["layout"] == "packed-2x2" and spec["guidance"] == "embedded"
    pipe = Pipeline(flux_dev_fp32)
    noise = pipe.initial_noise(1, *size)
    ours = pipe(PROMPT, noise=noise, steps=STEPS, guidance=2.5, height=size[0], width=size[1])
    reference = _diffusers_image(flux_dev_folder, noise, *size, guidance=2.5)
    assert np.abs(_levels(ours.image_float) - _levels(reference)).max() <= 1


def test_img2img_gives_diffusers_image(flux_dev_folder, flux_dev_fp32, monkeypatch):
    from diffusers import FluxImg2ImgPipeline
    from diffusers.pipelines.flux import pipeline_flux_img2img as module
    from PIL import Image

    pipe = Pipeline(flux_dev_fp32)
    noise = pipe.initial_noise(5, 64, 64)
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    ours = pipe(PROMPT, image=image, strength=0.6, noise=noise, steps=STEPS, guidance=2.5)
    # diffusers samples the VAE posterior: take its mean, as this runtime does; the noise is ours (unpacked)
    monkeypatch.setattr(module, "retrieve_latents",
                        lambda output, generator=None, sample_mode="sample": output.latent_dist.mode())
    monkeypatch.setattr(module, "randn_tensor", lambda shape, **_: torch.from_numpy(noise).reshape(shape))
    with torch.no_grad():
        reference = FluxImg2ImgPipeline.from_pretrained(flux_dev_folder)(
            PROMPT, image=Image.fromarray(image), strength=0.6, num_inference_steps=STEPS, guidance_scale=2.5,
            height=64, width=64, output_type="np").images[0]
    assert np.abs(_levels(ours.image_float) - _levels(reference)).max() <= 1


def test_schnell_gives_diffusers_image_and_takes_no_guidance(flux_schnell_folder, tmp_path, capsys):
    artifact = tmp_path / "schnell"
    assert main(["compress", "--model", str(flux_schnell_folder), "--out", str(artifact)]) == 0
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["pipeline"]["denoiser"]["guidance"] == "none"
    assert (manifest["pipeline"]["steps"], manifest["pipeline"]["guidance"]) == (4, 0.0)
    pipe = Pipeline(artifact)
    noise = pipe.initial_noise(2, 64, 64)
    ours = pipe(PROMPT, noise=noise, steps=STEPS, height=64, width=64)
    reference = _diffusers_image(flux_schnell_folder, noise, 64, 64, guidance=0.0)
    assert np.abs(_levels(ours.image_float) - _levels(reference)).max() <= 1
    out = str(tmp_path / "x.png")
    assert main(["run", str(artifact), "--prompt", "a", "--out", out, "--guidance", "3"]) == 2
    assert "its model takes no guidance scale" in capsys.readouterr().err


def test_openvino_and_optimum_pipelines_give_sdopt_image(flux_dev_fp32, tmp_path):
    ort = pytest.importorskip("optimum.onnxruntime", reason="Optimum's ONNX Runtime pipelines (the compat extra)")
    intel = pytest.importorskip("optimum.intel", reason="optimum-intel's OpenVINO pipelines (the compat extra)")
    pipe = Pipeline(flux_dev_fp32)
    noise = pipe.initial_noise(0, 64, 64)
    ours = pipe(PROMPT, noise=noise, steps=STEPS, guidance=3.5, height=64, width=64).image_float

    def optimum(pipeline_class, folder):
        out = pipeline_class.from_pretrained(str(folder))(PROMPT, num_inference_steps=STEPS, guidance_scale=3.5,
                                                          latents=torch.from_numpy(pack_latents(noise)), height=64,
                                                          width=64, output_type="np")
        return np.asarray(out.images[0], np.float32)

    assert psnr(optimum(ort.ORTFluxPipeline, flux_dev_fp32) * 255, ours * 255) >= 40.0
    built = tmp_path / "built"
    shutil.copytree(flux_dev_fp32, built)
    assert main(["build", str(built), "--format", "openvino"]) == 0
    openvino = Pipeline(built, backend="openvino")(PROMPT, noise=noise, steps=STEPS, guidance=3.5, height=64,
                                                   width=64).image_float
    assert psnr(openvino * 255, ours * 255) >= 40.0
    assert psnr(optimum(intel.OVFluxPipeline, built) * 255, openvino * 255) >= 40.0


def test_bad_requests_are_one_line_before_work(flux_dev_folder, flux_dev_fp32, tmp_path, capsys):
    out = str(tmp_path / "x.png")

    def refused(argv, message):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err

    refused(["run", str(flux_dev_fp32), "--prompt", "a", "--out", out, "--height", "72"],
            "height 72 is not a positive multiple of 16")
    refused(["run", str(flux_dev_fp32), "--prompt", "a", "--out", out, "--negative-prompt", "b"],
            "a negative prompt needs classifier-free guidance")
    refused(["compress", "--model", str(flux_dev_folder), "--without-t5", "--out", str(tmp_path / "a")],
            "--without-t5 applies to SD3 folders")
    no_t5 = tmp_path / "no-t5"
    shutil.copytree(flux_dev_folder, no_t5)
    shutil.rmtree(no_t5 / "text_encoder_2")
    refused(["compress", "--model", str(no_t5), "--out", str(tmp_path / "b")], "a FLUX folder needs its T5 encoder")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
