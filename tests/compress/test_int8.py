"""INT8 recipe: calibrated on the pipeline's own trajectory, exported as standard symmetric Q/DQ."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from sdopt.calibration.trajectory import CalibrationConfig
from sdopt.compress.modelopt_state import quantized_layer_names
from sdopt.compress.quantize import QuantizeConfig, apply
from sdopt.compress.trajectories import record_denoiser_calls
from sdopt.export.writer import write_artifact
from sdopt.recipes.recipe import resolve
from sdopt.sources.source import load_source

CALIBRATION = CalibrationConfig(num_prompts=2, steps=3, seed=7)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    source = apply(load_source("arch:tiny"), QuantizeConfig(calibration=CALIBRATION))
    out = tmp_path_factory.mktemp("int8") / "artifact"
    write_artifact(source, resolve("int8").to_dict(), out)
    return source, out


def test_calibration_records_whole_guided_trajectory():
    source = load_source("arch:tiny")
    records = record_denoiser_calls(source, CALIBRATION)
    assert len(records) == CALIBRATION.num_prompts * CALIBRATION.steps
    assert all(r["sample"].shape[0] == 2 for r in records)  # classifier-free-guidance batch
    timesteps = [float(r["timestep"][0]) for r in records[:CALIBRATION.steps]]
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == CALIBRATION.steps
    again = record_denoiser_calls(source, CALIBRATION, use_cache=False)
    assert all(torch.equal(a["sample"], b["sample"]) for a, b in zip(records, again))


def test_skip_list_keeps_layers_in_float(quantized):
    source, _ = quantized
    names = quantized_layer_names(source.pipeline.unet)
    assert names
    assert not [n for n in names if any(s in n for s in ("conv_in", "conv_out", "time_emb", "conv_shortcut"))]
    record = source.outputs.records[-1]
    assert record["quantized_layers"] == len(names) and "conv_in" in record["float_layers"]


def test_qdq_form(quantized):
    source, out = quantized
    model = onnx.load(str(out / "unet" / "model.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    names = quantized_layer_names(source.pipeline.unet)
    modules = dict(source.pipeline.unet.named_modules())
    n_convs = sum(isinstance(modules[n], torch.nn.Conv2d) for n in names)
    for node in dq_nodes + q_nodes:
        zero_point = numpy_helper.to_array(inits[node.input[2]])
        assert not zero_point.any()  # symmetric
    constant = {n.input[0]: numpy_helper.to_array(inits[n.input[0]]) for n in dq_nodes if n.input[0] in inits}
    weights = [w for w in constant.values() if w.dtype == np.int8]
    biases = [b for b in constant.values() if b.dtype == np.int32]
    assert len(weights) == len(names)
    assert all(w.min() >= -64 and w.max() <= 63 for w in weights)  # 7-bit range by default
    assert len(biases) == n_convs  # int32 bias of each output-quantized conv
    activation_dqs = [n for n in dq_nodes if n.input[0] not in inits]
    assert len(activation_dqs) == len(q_nodes)
    assert all(numpy_helper.to_array(inits[n.input[2]]).dtype == np.int8 for n in q_nodes)
    assert sum(n.name.endswith("/output/QuantizeLinear") for n in q_nodes) == n_convs


def test_int8_artifact_runs(quantized, tmp_path):
    from sdopt.app.cli import main

    _, out = quantized
    assert main(["run", str(out), "--prompt", "a cat", "--out", str(tmp_path / "x.png"), "--steps", "3"]) == 0
    assert (tmp_path / "x.png").stat().st_size > 0


def test_time_embedding_precision_option():
    calibration = CalibrationConfig(num_prompts=1, steps=2)
    default = apply(load_source("arch:tiny"), QuantizeConfig(calibration=calibration))
    assert not [n for n in quantized_layer_names(default.pipeline.unet) if "time_emb" in n]
    quantized = apply(load_source("arch:tiny"), QuantizeConfig(time_embedding="quantized", calibration=calibration))
    names = quantized_layer_names(quantized.pipeline.unet)
    assert "time_embedding.linear_1" in names and any(n.endswith("time_emb_proj") for n in names)
