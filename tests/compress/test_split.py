"""Split quantizers for the concatenated skip input of up-block ResNets."""

import json

import onnx
import torch

from sdopt.backbones.unet.convention import run_unet
from sdopt.backbones.unet.shortcuts import SplitInputConv, skip_channels, split_skip_convs
from sdopt.calibration.trajectory import CalibrationConfig
from sdopt.compress.trajectories import record_denoiser_calls
from sdopt.sources.source import load_source


def test_split_conv_computes_the_same():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 8, 3, padding=1)
    split = SplitInputConv(conv, 5)
    x = torch.randn(2, 12, 6, 6)
    assert split.parts[0].in_channels == 5 and split.parts[1].in_channels == 7 and split.parts[1].bias is None
    torch.testing.assert_close(split(x), conv(x), rtol=1e-5, atol=1e-5)


def test_unet_split_at_the_skip_boundary():
    source = load_source("arch:tiny")
    unet = source.pipeline.unet
    call = record_denoiser_calls(source, CalibrationConfig(num_prompts=1, steps=2))[0]
    skips = skip_channels(unet, lambda m: run_unet(m, call))
    # one entry per up-block ResNet, each reading a skip tensor of the matching down path
    assert len(skips) == sum(len(b.resnets) for b in unet.up_blocks)
    before = {name: unet.get_submodule(f"{name}.conv1").in_channels for name in skips}
    with torch.no_grad():
        expected = run_unet(unet, call)
        replaced = split_skip_convs(unet, lambda m: run_unet(m, call))
        got = run_unet(unet, call)
    assert set(replaced) == {f"{n}.conv1" for n in skips} | {f"{n}.conv_shortcut" for n in skips}
    for name, skip in skips.items():
        conv1 = unet.get_submodule(f"{name}.conv1")
        assert isinstance(conv1, SplitInputConv)
        assert conv1.parts[1].in_channels == skip and conv1.parts[0].in_channels == before[name] - skip
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_split_shortcuts_export_two_quantized_paths(tmp_path):
    from sdopt.app.cli import main

    out = tmp_path / "split"
    assert main(["compress", "--model", "arch:tiny", "--recipe", "int8", "--split-shortcuts", "--out", str(out),
                 "--calib-steps", "2", "--calib-num-prompts", "1"]) == 0
    record = json.loads((out / "manifest.json").read_text())["passes"][-1]
    assert "up_blocks.0.resnets.0.conv1" in record["split_convs"]
    model = onnx.load(str(out / "unet" / "model.onnx"))
    names = {n.name for n in model.graph.node}
    scope = "/unet/up_blocks.0/resnets.0/conv1"
    for part in (0, 1):  # each half: its own activation Q/DQ in front of its own conv
        assert f"{scope}/parts.{part}/Conv/input/QuantizeLinear" in names
    scales = {n.name: n.input[1] for n in model.graph.node if n.name.startswith(scope) and n.op_type == "QuantizeLinear"}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    first, second = (float(inits[scales[f"{scope}/parts.{p}/Conv/input/QuantizeLinear"]]) for p in (0, 1))
    assert first != second
    # the shortcut conv is in the default skip list: split, but left in float
    assert "/unet/up_blocks.0/resnets.0/conv_shortcut/parts.0/Conv/input/QuantizeLinear" not in names
