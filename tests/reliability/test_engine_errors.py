"""Engine failures are one meaningful line: the cause the engine gave, not its stack of frames."""

import pytest
from reliability_helpers import fails, rehash

from sdopt.runtime.backends import engine_message


def test_openvino_frames_are_dropped(capsys, artifact_copy, png):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    (artifact_copy / "unet" / "model.onnx").write_bytes(b"not a graph" * 10)
    rehash(artifact_copy, "unet/model.onnx")
    line = fails(capsys, ["run", artifact_copy, "--prompt", "x", "--out", png, "--backend", "openvino"])
    assert "unet/model.onnx: OpenVINO cannot compile it (Unable to read the model" in line
    assert "Exception from" not in line


def test_onnxruntime_run_failure(capsys, artifact_copy, png):
    """A graph whose declared shapes the runtime's inputs break fails in the engine, said in one line."""
    import onnx

    path = artifact_copy / "vae_decoder" / "model.onnx"
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3  # the runtime feeds 4 latent channels
    onnx.save(model, str(path))
    rehash(artifact_copy, "vae_decoder/model.onnx")
    line = fails(capsys, ["run", artifact_copy, "--prompt", "x", "--out", png, "--steps", "2"])
    assert "vae_decoder/model.onnx: ONNX Runtime failed to run it (Got invalid dimensions for input: latent" in line
    assert not png.exists()


@pytest.mark.parametrize("text, expected", [
    ("Exception from src/inference/src/cpp/core.cpp:132:\nException from src/inference/src/dev/plugin.cpp:59:\n"
     "Check 'false' failed at src/frontends/common/src/frontend.cpp:47:\nLoading input model\nPath 'x' is outside\n\n",
     "Path 'x' is outside"),
    ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x\n index: 0 Got: 2",
     "Got invalid dimensions for input: x"),
    ("", "RuntimeError"),
])
def test_engine_message(text, expected):
    assert engine_message(RuntimeError(text)) == expected
