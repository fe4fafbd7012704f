"""Channel pruning (torch-pruning) narrows the ResNet blocks by whole GroupNorm groups to a MAC target; the result
exports, runs in ONNX Runtime and reloads from its widths."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from diffusers import UNet2DConditionModel

from sdopt.backbones.unet.convention import run_unet
from sdopt.calibration.trajectory import CalibrationConfig
from sdopt.compress import channels, prune
from sdopt.contract.errors import SdoptError
from sdopt.sources.source import load_source


def _pruned(spec, **options):
    source = load_source(spec)
    teacher = source.pipeline.unet
    config = prune.PruneConfig(calibration=CalibrationConfig(num_prompts=2, steps=4), **options)
    prune.apply(source, config)
    return source, teacher, source.pipeline.unet, source.outputs.records[-1]


def test_channels_reach_the_mac_target_by_whole_groups():
    source, teacher, student, record = _pruned("tiny-shapes", blocks="none", macs=0.85)
    assert abs(record["after"]["macs"] / record["before"]["macs"] - 0.85) < 0.03
    assert record["after"]["parameters"] < record["before"]["parameters"]
    before = channels.resnet_blocks(teacher)
    for name, block in channels.resnet_blocks(student).items():
        old = before[name]
        per_group = old.conv1.out_channels // old.norm2.num_groups
        assert block.conv1.out_channels == record["channel_widths"][name] == block.norm2.num_groups * per_group
        assert block.conv1.out_channels < old.conv1.out_channels
        assert (block.conv1.in_channels, block.conv2.out_channels) == (old.conv1.in_channels, old.conv2.out_channels)
        # the kept channels are the teacher's own: every student filter is one of the teacher's
        kept = (block.conv1.weight.flatten(1)[:, None] == old.conv1.weight.flatten(1)[None]).all(-1).any(1)
        assert bool(kept.all())
    with torch.no_grad():
        out = run_unet(student, source.example_inputs(latent_hw=(4, 4)))
    assert torch.isfinite(out).all()


def test_taylor_ranks_channels_by_the_denoising_loss():
    _, _, magnitude, _ = _pruned("tiny-shapes", blocks="none", macs=0.85)
    _, _, taylor, record = _pruned("tiny-shapes", blocks="none", macs=0.85, importance="taylor")
    assert record["importance"] == "taylor"
    same = [torch.equal(a.conv1.weight, b.conv1.weight) for a, b in
            zip(channels.resnet_blocks(magnitude).values(), channels.resnet_blocks(taylor).values())]
    assert not all(same)  # a different choice of channels in at least one block
    assert all(p.grad is None for p in taylor.parameters())


def test_channel_pruned_unet_exports_and_reloads_from_its_widths(tmp_path):
    source, _, student, record = _pruned("arch:tiny", blocks="small", macs=0.62)
    assert record["channel_widths"] and record["channel_ratio"] > 0
    inputs = source.example_inputs(latent_hw=(8, 8))
    with torch.no_grad():
        reference = run_unet(student, inputs)
    fresh = UNet2DConditionModel(**{k: v for k, v in dict(student.config).items() if not k.startswith("_")})
    channels.apply_widths(fresh, record["channel_widths"])
    fresh.load_state_dict(student.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(run_unet(fresh.eval(), inputs), reference)
    path = tmp_path / "unet.onnx"
    torch.onnx.export(_Wrapped(student), tuple(inputs.values()), str(path), input_names=list(inputs),
                      output_names=["noise_pred"], dynamo=False)
    feeds = {k: v.numpy().astype(np.float32) for k, v in inputs.items()}
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(out - reference.numpy()).max() <= 1e-4 * np.abs(reference.numpy()).max()


class _Wrapped(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return run_unet(self.unet, {"sample": sample, "timestep": timestep,
                                    "encoder_hidden_states": encoder_hidden_states})


def test_an_unreachable_target_or_bad_key_is_one_error():
    with pytest.raises(SdoptError, match="out of reach"):
        _pruned("arch:tiny", blocks="none", macs=0.1)
    for bad in ({"macs": 0}, {"macs": 1.5}, {"importance": "random"}, {"blocks": "none"}):
        with pytest.raises(SdoptError):
            prune.PruneConfig(**bad)
