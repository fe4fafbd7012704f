"""sdopt artifacts are diffusers ONNX pipelines: Optimum's ORT pipeline and optimum-intel's OpenVINO pipeline
load them and make the image sdopt's runtime makes (same prompt, noise, scheduler and steps)."""

import numpy as np
import pytest

from sdopt.app.cli import main
from sdopt.app.evaluate import psnr
from sdopt.runtime.pipeline import Pipeline

PROMPT, SEED, STEPS = "a red circle on the left", 0, 8


@pytest.fixture(scope="module")
def tinyshapes_int8(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "tinyshapes-int8"
    assert main(["compress", "--recipe", "int8", "--out", str(out), "--calib-num-prompts", "2",
                 "--calib-steps", str(STEPS)]) == 0
    return out


def _sdopt_image(folder, backend: str):
    pipe = Pipeline(folder, backend=backend)
    guidance = pipe.info["guidance"]
    noise = pipe.initial_noise(SEED, pipe.info["height"], pipe.info["width"])
    return pipe(PROMPT, seed=SEED, steps=STEPS, guidance=guidance).image_float, noise, guidance


def _optimum_image(pipeline_class, folder, noise, guidance):
    import torch

    pipe = pipeline_class.from_pretrained(str(folder))
    out = pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=guidance, latents=torch.from_numpy(noise),
               output_type="np")
    return np.asarray(out.images[0], dtype=np.float32)


@pytest.mark.parametrize("artifact", ["tinyshapes_fp32", "tinyshapes_int8"])
def test_optimum_ort_pipeline_loads_the_artifact(request, artifact):
    ort = pytest.importorskip("optimum.onnxruntime", reason="Optimum's ONNX Runtime pipelines (the compat extra)")
    folder = request.getfixturevalue(artifact)
    ours, noise, guidance = _sdopt_image(folder, "onnxruntime")
    theirs = _optimum_image(ort.ORTStableDiffusionPipeline, folder, noise, guidance)
    assert theirs.shape == ours.shape
    assert psnr(theirs * 255, ours * 255) >= 40.0


@pytest.mark.parametrize("artifact", ["tinyshapes_fp32", "tinyshapes_int8"])
def test_optimum_intel_pipeline_loads_the_openvino_build(request, artifact, tmp_path):
    intel = pytest.importorskip("optimum.intel", reason="optimum-intel's OpenVINO pipelines (the compat extra)")
    import shutil

    folder = tmp_path / "artifact"
    shutil.copytree(request.getfixturevalue(artifact), folder)
    assert main(["build", str(folder), "--format", "openvino"]) == 0
    assert (folder / "unet" / "openvino_model.xml").is_file()
    ours, noise, guidance = _sdopt_image(folder, "openvino")
    theirs = _optimum_image(intel.OVStableDiffusionPipeline, folder, noise, guidance)
    assert psnr(theirs * 255, ours * 255) >= 40.0
