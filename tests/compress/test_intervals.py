"""Timestep-interval activation scales: calibrated per interval, exported as a table the graph
indexes with its timestep input, and the same arithmetic in torch (fake quant) and ONNX Runtime."""

import numpy as np
import onnx
import pytest
import torch

from sdopt.backbones.unet import UNET
from sdopt.calibration.statistics import Aggregation, RangeRecorder
from sdopt.compress import modelopt_state as quantizers
from sdopt.compress.modelopt_state import activation_quantizers
from sdopt.compress.quantize import QuantizeConfig, modelopt_config, set_interval_ranges
from sdopt.export import qdq

INTERVALS, T = 4, 1000


class _TimedBlock(torch.nn.Module):
    """Activations that grow with the timestep, as a UNet's do: each interval needs its own scale."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.proj = torch.nn.Linear(16, 24)

    def forward(self, sample, timestep):
        h = self.conv(sample * (1 + timestep / 250).reshape(-1, 1, 1, 1))
        return self.proj(torch.nn.functional.silu(h).flatten(2).transpose(1, 2))


@pytest.fixture(scope="module")
def calibrated():
    import modelopt.torch.quantization as mtq

    torch.manual_seed(0)
    block = _TimedBlock().eval()
    calls = [(torch.randn(2, 8, 6, 6), torch.full((2,), float(t))) for t in (950, 700, 450, 200, 20) for _ in range(2)]
    recorders = []

    def forward_loop(model):
        with RangeRecorder(activation_quantizers(model)) as recorder:
            for step, (x, t) in enumerate(calls):
                recorder.start_call(float(t[0]), step)
                model(x, t)
        recorders.append(recorder)

    mtq.quantize(block, modelopt_config(QuantizeConfig(skip=()), UNET), forward_loop)
    tables = recorders[-1].statistics().interval_ranges(Aggregation("max"), INTERVALS, T)
    set_interval_ranges(UNET, block, tables, T)
    return block, tables


def test_each_interval_has_its_own_range(calibrated):
    _, tables = calibrated
    conv_input = tables["conv.input_quantizer"]
    assert conv_input.shape == (INTERVALS,) and np.all(np.diff(conv_input) > 0)  # grows with t


def test_fake_quant_switches_ranges_with_the_timestep(calibrated):
    block, tables = calibrated
    with torch.no_grad():
        block(torch.randn(1, 8, 6, 6), torch.tensor([300.0]))
    assert float(block.conv.input_quantizer.amax) == pytest.approx(tables["conv.input_quantizer"][1])


def test_exported_table_matches_fake_quant(calibrated):
    import onnxruntime as ort

    from sdopt.export import onnx as onnx_export
    from sdopt.runtime.backends.onnxruntime import EXACT_INT8_OPTIONS

    block, _ = calibrated
    layers = quantizers.collect_layers(block)
    assert all(layer.input_table is not None and len(layer.input_table) == INTERVALS for layer in layers)
    example = (torch.randn(2, 8, 6, 6), torch.full((2,), 500.0))
    with quantizers.quantizers_disabled(block):
        model = onnx_export.trace(block, example, ["sample", "timestep"], ["out"],
                                  {"sample": {0: "batch"}, "timestep": {0: "batch"}})
    qdq.insert_qdq(model, layers, scope="/", interval=qdq.IntervalIndex("timestep", INTERVALS, T))
    onnx.checker.check_model(model)
    tables = [t for t in model.graph.initializer if t.name.endswith("_scale_table")]
    assert len(tables) == 3  # conv input, conv output, proj input
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=EXACT_INT8_OPTIONS)
    for t in (999.0, 750.0, 749.0, 260.0, 0.0):
        x, timestep = torch.randn(3, 8, 6, 6) * 1.3, torch.full((3,), t)
        with torch.no_grad():
            ref = block(x, timestep).numpy()
        (ours,) = session.run(None, {"sample": x.numpy(), "timestep": timestep.numpy()})
        # equal up to float rounding, except where a 1-ulp difference between torch's and ORT's
        # convolution sums flips a rounding decision (one quantization step on a few elements);
        # a wrong interval would move every element
        wrong = np.abs(ours - ref) > 1e-5 * np.abs(ref).max()
        assert wrong.mean() < 0.01, (t, wrong.mean())


def test_interval_tables_need_the_timestep_input(calibrated):
    from sdopt.contract.errors import SdoptError

    block, _ = calibrated
    with pytest.raises(SdoptError, match="timestep"):
        qdq.insert_qdq(onnx.ModelProto(), quantizers.collect_layers(block), scope="/")
