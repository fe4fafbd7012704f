"""Block removal derives valid diffusers UNets from any config, initialised from the teacher's kept blocks."""

import pytest
import torch
from diffusers import UNet2DConditionModel

from sdopt.backbones.unet.blocks import remove_blocks, student_config
from sdopt.backbones.unet.convention import run_unet
from sdopt.backbones.unet.deepcache import FullUNet, ShallowUNet, boundary
from sdopt.compress.prune import denoiser_macs as unet_macs
from sdopt.compress.prune import parameter_count
from sdopt.sources.archs import ARCHS
from sdopt.sources.source import load_source


def _config(unet) -> dict:
    return {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}


@pytest.mark.parametrize("arch", ["sd15", "sd21", "sdxl"])
def test_presets_shrink_real_sd_configs(arch):
    config = ARCHS[arch].unet
    counts = {}
    with torch.device("meta"):  # parameter counts only: no weights allocated
        for preset in ("none", "base", "small", "tiny"):
            c = config if preset == "none" else student_config({**config}, preset)
            counts[preset] = parameter_count(UNet2DConditionModel(**c))
    assert counts["none"] > counts["base"] > counts["small"] >= counts["tiny"]
    if arch == "sd15":  # BK-SDM-Base's 0.58 B from SD1.4's 0.86 B, with the mid block gone as well
        assert 0.45e9 < counts["base"] < 0.62e9


def test_pruned_unet_saves_loads_and_starts_from_the_teacher(tmp_path):
    source = load_source("tiny-shapes")
    teacher = source.pipeline.unet
    inputs = source.example_inputs(latent_hw=(4, 4))
    for preset in ("base", "small", "tiny"):
        student, counts = remove_blocks(teacher, preset)
        assert student.mid_block is None and counts["copied"] > 0.5 * parameter_count(student)
        assert unet_macs(student, inputs) < unet_macs(teacher, inputs)
        student.save_pretrained(tmp_path / preset, safe_serialization=True)
        loaded = UNet2DConditionModel.from_pretrained(tmp_path / preset).eval()
        with torch.no_grad():
            torch.testing.assert_close(run_unet(loaded, inputs), run_unet(student, inputs), rtol=1e-5, atol=1e-6)
    # kept blocks are the teacher's: the top down stage of `base` holds its first resnet unchanged
    base, _ = remove_blocks(teacher, "base")
    assert torch.equal(base.down_blocks[0].resnets[0].conv1.weight, teacher.down_blocks[0].resnets[0].conv1.weight)
    assert torch.equal(base.up_blocks[-1].resnets[-1].conv1.weight, teacher.up_blocks[-1].resnets[-1].conv1.weight)


def test_a_pruned_unet_splits_for_the_cache():
    source = load_source("arch:tiny")
    student, _ = remove_blocks(source.pipeline.unet, "small")
    inputs = source.example_inputs(latent_hw=(8, 8))
    with torch.no_grad():
        reference = run_unet(student, inputs)
        for branch in range(3 * len(student.up_blocks)):
            where = boundary(student, branch)
            _, feature = FullUNet(student, where, False)(*inputs.values())
            out = ShallowUNet(student, where, False)(*inputs.values(), feature)
            assert float((out - reference).abs().max() / reference.abs().max()) <= 1e-5


def test_too_few_stages_for_small_is_one_error():
    config = {**ARCHS["tiny"].unet, "block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D",
              "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
    with pytest.raises(Exception, match="removes the innermost stage"):
        student_config(config, "small")
