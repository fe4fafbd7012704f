"""SD3 / SD3.5 folders end to end: compress (fp32) -> ONNX -> the numpy runtime gives diffusers' image for the same
prompt, noise, steps and guidance; OpenVINO and Optimum's pipelines give sdopt's."""

import json
import shutil

import numpy as np
import pytest
import torch
from sdopt.runtime.pipeline import Pipeline

from sdopt.app.cli import main
from sdopt.app.evaluate import psnr

PROMPT, STEPS, GUIDANCE, SIZE = "a red circle left of a blue square", 4, 5.0, 64


def _diffusers_image(pipe, noise, **kwargs):
    with torch.no_grad():
        image = pipe(PROMPT, latents=torch.from_numpy(noise), num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     height=SIZE, width=SIZE, output_type="np", **kwargs).images[0]
    return image


def _levels(image_float):
    return (np.asarray(image_float) * 255).round()


@pytest.mark.parametrize("folder, without_t5", [("sd3_folder", False), ("sd3_no_t5_folder", False),
                                                ("sd35_folder", False), ("sd3_folder", True)])
def test_fp32_artifact_gives_diffusers_image(request, tmp_path, folder, without_t5):
    from diffusers import StableDiffusion3Pipeline

    source = request.getfixturevalue(folder)
    artifact = tmp_path / "fp32"
    assert main(["compress", "--model", str(source), "--out", str(artifact)] + ["--without-t5"] * without_t5) == 0
    manifest = json.loads((artifact / "manifest.json").read_text())
    spec = manifest["pipeline"]["denoiser"]
    assert spec["family"] == "mmdit" and spec["prediction"] == "flow" and manifest["pipeline"]["scheduler"] == "flow-euler"
    has_t5 = folder != "sd3_no_t5_folder" and not without_t5
    assert ("text_encoder_3" in manifest["components"]) == has_t5
    ours_pipe = Pipeline(artifact)
    noise = ours_pipe.initial_noise(3, SIZE, SIZE)
    ours = ours_pipe(PROMPT, noise=noise, steps=STEPS, guidance=GUIDANCE, height=SIZE, width=SIZE)
    options = {} if has_t5 else {"text_encoder_3": None, "tokenizer_3": None}
    reference = _diffusers_image(StableDiffusion3Pipeline.from_pretrained(source, **options), noise)
    assert np.abs(_levels(ours.image_float) - _levels(reference)).max() <= 1


def test_unguided_and_img2img_give_diffusers_image(sd3_folder, sd3_fp32, monkeypatch):
    from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3Pipeline
    from diffusers.pipelines.stable_diffusion_3 import (
        pipeline_stable_diffusion_3_img2img as module,
    )
    from PIL import Image

    ours_pipe = Pipeline(sd3_fp32)
    noise = ours_pipe.initial_noise(4, SIZE, SIZE)
    ours = ours_pipe(PROMPT, noise=noise, steps=STEPS, guidance=1.0, height=SIZE, width=SIZE)
    with torch.no_grad():
        reference = StableDiffusion3Pipeline.from_pretrained(sd3_folder)(
            PROMPT, latents=torch.from_numpy(noise), num_inference_steps=STEPS, guidance_scale=1.0, height=SIZE,
            width=SIZE, output_type="np").images[0]
    assert np.abs(_levels(ours.image_float) - _levels(reference)).max() <= 1

    image = (np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    ours = ours_pipe(PROMPT, image=image, strength=0.6, noise=noise, steps=STEPS, guidance=GUIDANCE)
    # diffusers samples the VAE posterior: take its mean, as this runtime does; the noise is ours
    monkeypatch.setattr(module, "retrieve_latents",
                        lambda output, generator=None, sample_mode="sample": output.latent_dist.mode())
    monkeypatch.setattr(module, "randn_tensor", lambda shape, **_: torch.from_numpy(noise).reshape(shape))
    with torch.no_grad():
        reference = StableDiffusion3Img2ImgPipeline.from_pretrained(sd3_folder)(
            PROMPT, image=Image.fromarray(image), strength=0.6, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
            output_type="np").images[0]
    assert np.abs(_levels(ours.image_float) - _levels(reference)).max() <= 1


def test_openvino_and_optimum_pipelines_give_sdopt_image(sd3_fp32, tmp_path):
    ort = pytest.importorskip("optimum.onnxruntime", reason="Optimum's ONNX Runtime pipelines (the compat extra)")
    intel = pytest.importorskip("optimum.intel", reason="optimum-intel's OpenVINO pipelines (the compat extra)")
    ours_pipe = Pipeline(sd3_fp32)
    noise = ours_pipe.initial_noise(0, SIZE, SIZE)
    ours = ours_pipe(PROMPT, noise=noise, steps=STEPS, guidance=GUIDANCE, height=SIZE, width=SIZE).image_float

    def optimum(pipeline_class, folder):
        out = pipeline_class.from_pretrained(str(folder))(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                                                          latents=torch.from_numpy(noise), height=SIZE, width=SIZE,
                                                          output_type="np")
        return np.asarray(out.images[0], np.float32)

    assert psnr(optimum(ort.ORTStableDiffusion3Pipeline, sd3_fp32) * 255, ours * 255) >= 40.0
    built = tmp_path / "built"
    shutil.copytree(sd3_fp32, built)
    assert main(["build", str(built), "--format", "openvino"]) == 0
    openvino = Pipeline(built, backend="openvino")(PROMPT, noise=noise, steps=STEPS, guidance=GUIDANCE, height=SIZE,
                                                   width=SIZE).image_float
    assert psnr(openvino * 255, ours * 255) >= 40.0
    assert psnr(optimum(intel.OVStableDiffusion3Pipeline, built) * 255, openvino * 255) >= 40.0


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "prune-small"], "prune: does not support the mmdit backbone (StableDiffusion3Pipeline) yet"),
    (["--recipe", "cache"], "cache: does not support the mmdit backbone"),
])
def test_passes_without_dit_support_refuse_before_work(sd3_folder, tmp_path, capsys, argv, message):
    assert main(["compress", "--model", str(sd3_folder), "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_requests_are_one_line(sd3_fp32, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert main(["run", str(sd3_fp32), "--prompt", "a", "--out", out, "--scheduler", "ddim"]) == 2
    assert "scheduler ddim does not sample a flow-matching model; choose flow-euler" in capsys.readouterr().err
    assert main(["compress", "--without-t5", "--out", str(tmp_path / "a")]) == 2
    assert "--without-t5 applies to SD3 models" in capsys.readouterr().err


def test_a_t5_tokenizer_file_that_is_not_one_is_refused(sd3_fp32, tmp_path, capsys):
    import hashlib

    broken = tmp_path / "broken"
    shutil.copytree(sd3_fp32, broken)
    data = b'{"model": "not a tokenizer"}'
    (broken / "tokenizer_3" / "tokenizer.json").write_bytes(data)
    manifest = json.loads((broken / "manifest.json").read_text())  # listed as written: only its content is wrong
    manifest["files"]["tokenizer_3/tokenizer.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", str(broken), "--prompt", "a", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "tokenizer_3/tokenizer.json: not a usable tokenizer" in err and len(err.strip().splitlines()) == 1


def test_a_prompt_longer_than_an_encoder_is_cut_as_diffusers_cuts_it_and_said_once(sd3_fp32, tmp_path, capsys):
    long_prompt = " ".join(["a red circle left of a blue square"] * 40)  # past CLIP's 77 and T5's 256 tokens
    assert main(["run", str(sd3_fp32), "--prompt", long_prompt, "--steps", "1", "--out", str(tmp_path / "x.png")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "was longer than" in line]
    assert len(notes) == 1 and all(f"text_encoder{s}'s" in notes[0] for s in ("", "_2", "_3"))


@pytest.mark.parametrize("change, message", [
    ({"text_width": 8}, "give 64 features side by side, more than the denoiser's text width 8"),
    ({"text_encoders": "pooled only"}, "no text encoder gives the denoiser its text tokens"),
])
def test_a_denoiser_spec_that_cannot_feed_the_denoiser_is_refused(sd3_fp32, tmp_path, capsys, change, message):
    broken = tmp_path / "broken"
    shutil.copytree(sd3_fp32, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    spec = manifest["pipeline"]["denoiser"]
    if change.get("text_encoders"):
        spec["text_encoders"] = [dict(e, combine="pooled") for e in spec["text_encoders"]]
    else:
        spec.update(change)
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", str(broken), "--prompt", "a", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
