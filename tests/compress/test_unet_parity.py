"""The exported UNet of each recipe, run in ONNX Runtime, against its fake-quant torch model.

A quantized UNet is chaotic: a float32-sized change at any quantizer's input flips some rounding
decisions, each flip moves a value by one quantization step, and the flips compound layer after
layer. So even the fake-quant model differs from itself by percents when every quantizer input is
perturbed by 1e-6 (relative), and no float32 implementation can match it closer than that. The
test measures that floor on the same calls and requires ONNX Runtime to stay within it; per layer
the graphs are exact (test_formats.py)."""

import numpy as np
import pytest
import torch

from sdopt.backbones.unet.convention import run_unet
from sdopt.calibration.trajectory import CalibrationConfig
from sdopt.compress.modelopt_state import activation_quantizers, quantizers_disabled
from sdopt.compress.quantize import QuantizeConfig, apply
from sdopt.compress.trajectories import record_denoiser_calls
from sdopt.export.writer import write_artifact
from sdopt.runtime.backends.onnxruntime import OrtModel
from sdopt.sources.source import load_source

CALIBRATION = CalibrationConfig(num_prompts=2, steps=4)


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _perturbed_outputs(unet, calls, scale=1e-6):
    generator = torch.Generator().manual_seed(0)

    def jitter(_module, args):
        x = args[0]
        return (x * (1 + scale * torch.randn(x.shape, generator=generator)),) + tuple(args[1:])

    handles = [q.register_forward_pre_hook(jitter) for q in activation_quantizers(unet).values()]
    try:
        return [run_unet(unet, c).numpy() for c in calls]
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("config", [
    QuantizeConfig(format="int8", calibration=CALIBRATION),
    QuantizeConfig(format="int8", split_shortcuts=True, calibration=CalibrationConfig(num_prompts=2, steps=4, intervals=4)),
    QuantizeConfig(format="fp8", calibration=CALIBRATION),
    QuantizeConfig(format="w4a8", calibration=CALIBRATION),
], ids=["int8", "int8-intervals-split", "fp8", "w4a8"])
def test_onnx_runtime_matches_fake_quant_within_its_noise_floor(config, tmp_path):
    source = apply(load_source("tiny-shapes"), config)
    out = write_artifact(source, {"name": config.format, "passes": []}, tmp_path / "artifact")
    manifest_unet = OrtModel(out / "unet" / "model.onnx")
    unet = source.pipeline.unet
    calls = record_denoiser_calls(source, config.calibration)
    with torch.no_grad():
        fake_quant = [run_unet(unet, c).numpy() for c in calls]
        with quantizers_disabled(unet):
            float_out = [run_unet(unet, c).numpy() for c in calls]
        perturbed = _perturbed_outputs(unet, calls)
    onnx_out = [manifest_unet.run({k: v.numpy() for k, v in c.items()})["out_sample"] for c in calls]
    ort_error = np.median([_rel(o, f) for o, f in zip(onnx_out, fake_quant)])
    floor = np.median([_rel(p, f) for p, f in zip(perturbed, fake_quant)])
    quantization = np.median([_rel(f, r) for f, r in zip(fake_quant, float_out)])
    print(f"{config.format}: onnx vs fake quant {ort_error:.4f}, noise floor {floor:.4f}, "
          f"fake quant vs float {quantization:.4f}")
    assert ort_error <= max(1e-2, 2 * floor)
    assert ort_error < 2 * quantization
