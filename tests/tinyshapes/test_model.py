"""The shipped tiny-shapes pipeline (skipped when the folder is absent)."""
import json
import os

import numpy as np
import pytest

from sdopt.reference.tinyshapes import MODEL_DIR

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "model_index.json").exists(), reason="no trained tiny-shapes model")


def test_folder_layout_and_size():
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    total = 0
    for root, _, files in os.walk(MODEL_DIR):
        for f in files:
            assert not f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))
            total += os.path.getsize(os.path.join(root, f))
    assert total <= 20 * 1024 * 1024
    unet = json.loads((MODEL_DIR / "unet" / "config.json").read_text())
    assert len(unet["block_out_channels"]) >= 3
    assert sum(t.startswith("CrossAttnDown") for t in unet["down_block_types"]) >= 2
    assert sum(t.startswith("CrossAttnUp") for t in unet["up_block_types"]) >= 2
    sched = json.loads((MODEL_DIR / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"]) == ("scaled_linear", 0.00085, 0.012)
    assert sched["num_train_timesteps"] == 1000 and sched["prediction_type"] == "v_prediction"
    assert sched["rescale_betas_zero_snr"] and sched["timestep_spacing"] == "trailing"


def test_pipeline_loads_offline_and_generates():
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(MODEL_DIR), safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer.model_max_length == 77
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    out = pipe(["a large red square in the center", "a small white circle at the top left"],
               num_inference_steps=3, guidance_scale=5.0, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, size, size, 3)
    assert np.isfinite(out.images).all()


def test_generations_follow_the_prompt():
    """A few held-out pairs through diffusers at the default steps and guidance (the full measurement is
    `sdopt eval`, 256 pairs)."""
    from sdopt.reference.tinyshapes.evaluate import DEFAULT_GUIDANCE, DEFAULT_STEPS, alignment, generate, load_pipeline
    from sdopt.reference.tinyshapes.grammar import heldout_pairs

    pairs = heldout_pairs(24)
    images = generate(load_pipeline(), pairs, DEFAULT_STEPS, DEFAULT_GUIDANCE, batch_size=24)
    result = alignment([c for c, _ in pairs], images)
    assert result["per_attribute"]["position"] >= 0.9 and result["alignment"] >= 0.75, result


def test_a_retrained_folder_is_evaluated_as_tiny_shapes(tmp_path, capsys):
    """The trainer's marker file makes any tiny-shapes folder get the held-out set, detector and defaults."""
    import shutil

    from sdopt.app.cli import main

    folder = tmp_path / "my-tiny-shapes"
    shutil.copytree(MODEL_DIR, folder)
    artifact = tmp_path / "fp32"
    assert main(["compress", "--model", str(folder), "--recipe", "fp32", "--out", str(artifact)]) == 0
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["source"]["family"] == "tiny-shapes"
    assert (manifest["pipeline"]["steps"], manifest["pipeline"]["guidance"]) == (25, 2.0)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a large red square in the center\na small blue circle at the top left\n")
    capsys.readouterr()
    assert main(["eval", str(artifact), "--reference", str(artifact), "--prompts", str(prompts), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["alignment"] == result["reference_alignment"] and set(result["per_attribute"]) == {
        "size", "color", "shape", "position"}
