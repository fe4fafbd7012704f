"""INT8 recipe: calibrated on the pipeline's own trajectory, exported as standard symmetric Q/DQ."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from sdopt.calibration.trajectory import CalibrationConfig, record_unet_inputs
from sdopt.compress.quantize import QuantizeConfig, apply, quantized_layer_names
from sdopt.export.writer import write_artifact
from sdopt.recipe import resolve
from sdopt.runtime.backends.onnxruntime import OrtModel
from sdopt.sources import load_source

CALIBRATION = CalibrationConfig(num_prompts=2, steps=3, seed=7)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    source = apply(load_source("arch:tiny"), QuantizeConfig(calibration=CALIBRATION))
    out = tmp_path_factory.mktemp("int8") / "artifact"
    write_artifact(source, resolve("int8").to_dict(), out)
    return source, out


def test_calibration_records_whole_guided_trajectory():
    source = load_source("arch:tiny")
    records = record_unet_inputs(source, CALIBRATION)
    assert len(records) == CALIBRATION.num_prompts * CALIBRATION.steps
    assert all(r["sample"].shape[0] == 2 for r in records)  # classifier-free-guidance batch
    timesteps = [float(r["timestep"][0]) for r in records[:CALIBRATION.steps]]
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == CALIBRATION.steps
    again = record_unet_inputs(source, CALIBRATION)
    assert all(torch.equal(a["sample"], b["sample"]) for a, b in zip(records, again))


def test_skip_list_keeps_layers_in_float(quantized):
    source, _ = quantized
    names = quantized_layer_names(source.pipeline.unet)
    assert names
    assert not [n for n in names if any(s in n for s in ("conv_in", "conv_out", "time_emb", "conv_shortcut"))]
    record = source.records[-1]
    assert record["quantized_layers"] == len(names) and "conv_in" in record["float_layers"]


def test_qdq_form(quantized):
    source, out = quantized
    model = onnx.load(str(out / "unet" / "model.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    n_layers = len(quantized_layer_names(source.pipeline.unet))
    assert len(dq_nodes) - len(q_nodes) == n_layers  # one weight DQ per layer, activation Q/DQ pairs
    for node in dq_nodes + q_nodes:
        zero_point = numpy_helper.to_array(inits[node.input[2]])
        assert zero_point.dtype == np.int8 and not zero_point.any()  # symmetric int8
    weight_dqs = [n for n in dq_nodes if n.input[0] in inits]
    assert len(weight_dqs) == n_layers
    assert all(numpy_helper.to_array(inits[n.input[0]]).dtype == np.int8 for n in weight_dqs)


def test_onnx_matches_fake_quant_torch(quantized):
    source, out = quantized
    unet_onnx = OrtModel(out / "unet" / "model.onnx")
    errors = []
    for inputs in record_unet_inputs(source, CALIBRATION)[::2]:
        with torch.no_grad():
            ref = source.pipeline.unet(inputs["sample"], inputs["timestep"],
                                       encoder_hidden_states=inputs["encoder_hidden_states"], return_dict=False)[0]
        ours = unet_onnx.run({k: v.numpy() for k, v in inputs.items()})["noise_pred"]
        errors.append(np.linalg.norm(ours - ref.numpy()) / np.linalg.norm(ref.numpy()))
    assert max(errors) <= 1e-2, errors


def test_int8_artifact_runs(quantized, tmp_path):
    from sdopt.cli import main

    _, out = quantized
    assert main(["run", str(out), "--prompt", "a cat", "--out", str(tmp_path / "x.png"), "--steps", "3"]) == 0
    assert (tmp_path / "x.png").stat().st_size > 0
