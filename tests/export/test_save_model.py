"""Graphs with large weights keep them in model.onnx_data (ONNX Runtime maps them from the file); small graphs
stay one file; both run the same."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from sdopt.export import onnx as onnx_export


def _matmul_graph(rows: int) -> onnx.ModelProto:
    weight = np.random.default_rng(0).standard_normal((rows, 4), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(folder, rows):
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.ones((1, rows), np.float32)})[0]


def test_weights_over_the_threshold_go_to_external_data(tmp_path):
    big_rows = onnx_export.EXTERNAL_DATA_THRESHOLD // 16 + 1  # 4 float32 columns: just over the threshold
    assert onnx_export.save_model(_matmul_graph(big_rows), tmp_path / "big") == ["model.onnx",
                                                                                   onnx_export.EXTERNAL_DATA_NAME]
    assert (tmp_path / "big" / "model.onnx").stat().st_size < 100_000
    modes = {(tmp_path / "big" / name).stat().st_mode for name in ("model.onnx", onnx_export.EXTERNAL_DATA_NAME)}
    assert len(modes) == 1  # the weights as readable as the graph
    assert onnx_export.save_model(_matmul_graph(64), tmp_path / "small") == ["model.onnx"]
    assert onnx_export.save_model(_matmul_graph(64), tmp_path / "forced", external_data=True) == [
        "model.onnx", onnx_export.EXTERNAL_DATA_NAME]
    np.testing.assert_array_equal(_run(tmp_path / "small", 64), _run(tmp_path / "forced", 64))
    weight = numpy_helper.to_array(_matmul_graph(big_rows).graph.initializer[0])
    np.testing.assert_allclose(_run(tmp_path / "big", big_rows)[0], weight.sum(axis=0, dtype=np.float64), atol=1.0)
