"""The quantize pass on transformer denoisers (SD3's MMDiT, FLUX): calibrated along the pipeline's own
flow-matching trajectories in the backbone's timestep domain, the embedders, the adaLN modulation and the final
projection kept in float, exported as Q/DQ that ONNX Runtime runs."""

import json

import numpy as np
import onnx
import pytest

from sdopt.app.cli import main

CALIBRATION = ["--calib-num-prompts", "2", "--calib-steps", "4"]
FLOAT_BY_DEFAULT = ("pos_embed", "x_embedder", "context_embedder", "time_text_embed", "norm_out", "proj_out",
                    "norm1/linear", "norm1_context/linear", "norm/linear")


def _quantized_node_names(folder) -> list[str]:
    """Conv / MatMul / Gemm nodes of the transformer graph whose activation input comes through a DequantizeLinear."""
    graph = onnx.load(str(folder / "transformer" / "model.onnx"), load_external_data=False).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and n.input[0] in dequantized]


def _record(folder) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    return next(r for r in manifest["passes"] if r["pass"] == "quantize")


@pytest.mark.parametrize("fixture", ["sd3_folder", "flux_dev_folder"])
def test_int8_transformer_keeps_embedders_and_modulation_in_float(request, tmp_path, capsys, fixture):
    folder = request.getfixturevalue(fixture)
    out = tmp_path / "int8"
    assert main(["compress", "--model", str(folder), "--recipe", "int8", *CALIBRATION,
                 "--out", str(out)]) == 0
    quantized = _quantized_node_names(out)
    assert any("/attn/to_q/" in name for name in quantized) and any("/ff/" in name or "proj_mlp" in name
                                                                      for name in quantized)
    assert not [name for name in quantized if any(f"/{pattern}/" in name for pattern in FLOAT_BY_DEFAULT)]
    record = _record(out)
    assert record["quantized_layers"] == len(quantized)
    assert any("norm1.linear" in name for name in record["float_layers"])
    capsys.readouterr()
    assert main(["eval", str(out), "--model", str(folder), "--prompts", str(_prompts(tmp_path)), "--steps", "4",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert np.isfinite(result["psnr"]) and 20 < result["psnr"] < 100  # close to the fp32 image, and not it


def test_flux_interval_scales_follow_its_sigma_timestep(flux_dev_folder, tmp_path):
    """FLUX is called with t / 1000 in [0, 1]: two intervals must each get calls (and their own scales). Its
    shifted schedule spends 4 steps above sigma 0.5, so the trajectories take 10."""
    out = tmp_path / "int8-intervals"
    assert main(["compress", "--model", str(flux_dev_folder), "--recipe", "int8", "--calib-num-prompts", "1",
                 "--calib-steps", "10", "--calib-intervals", "2", "--out", str(out)]) == 0
    assert _record(out)["activation_scales"] == "2 timestep intervals"
    graph = onnx.load(str(out / "transformer" / "model.onnx"), load_external_data=False).graph
    tables = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_scale_table")]
    assert tables and all(t.shape == (2,) for t in tables)
    assert any(not np.isclose(t[0], t[1]) for t in tables)


def _prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle left of a blue square\na green triangle\n")
    return path
