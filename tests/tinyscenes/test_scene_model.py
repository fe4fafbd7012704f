"""The shipped tiny-scenes pipeline (skipped when the folder is absent)."""
import json
import os

import pytest

from sdopt.reference.families import FAMILIES

FAMILY = FAMILIES["tiny-scenes"]
pytestmark = pytest.mark.skipif(not FAMILY.shipped, reason="no trained tiny-scenes model")


def test_folder_layout_and_size():
    index = json.loads((FAMILY.model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    total = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(FAMILY.model_dir) for f in files)
    assert total <= 20 * 1024 * 1024
    assert not any(f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")) for _, _, fs in os.walk(FAMILY.model_dir)
                   for f in fs)
    unet = json.loads((FAMILY.model_dir / "unet" / "config.json").read_text())
    assert sum(t.startswith("CrossAttnDown") for t in unet["down_block_types"]) >= 2
    assert json.loads((FAMILY.model_dir / FAMILY.marker).read_text())["family"] == "tiny-scenes"


def test_generations_follow_the_prompt():
    """A few held-out pairs through diffusers at the default steps and guidance (the full measurement is
    `sdopt eval`, 256 pairs)."""
    from sdopt.reference.tinyscenes.evaluate import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from sdopt.reference.tinyshapes.evaluate import generate, load_pipeline

    pairs = FAMILY.heldout_pairs(24)
    images = generate(load_pipeline(FAMILY.model_dir), pairs, DEFAULT_STEPS, DEFAULT_GUIDANCE, batch_size=24)
    result = FAMILY.alignment([c for c, _ in pairs], images)
    assert result["per_attribute"]["relation"] >= 0.9 and result["alignment"] >= 0.85, result
