"""OpenVINO backend: the same graphs as ONNX Runtime, the same numbers."""

import numpy as np
import pytest

from sdopt.runtime.pipeline import Pipeline

pytest.importorskip("openvino", reason="the openvino extra is not installed")


def test_openvino_pipeline_matches_onnx_runtime(tiny_fp32):
    ort_pipe = Pipeline(tiny_fp32)
    ov_pipe = Pipeline(tiny_fp32, "openvino", precision="f32")
    for name, model in ov_pipe.models.items():  # the graph's own names, whatever OpenVINO renamed
        assert model.input_names == ort_pipe.models[name].input_names
    a = ort_pipe("a red circle", seed=3, steps=3, guidance=5.0)
    b = ov_pipe("a red circle", seed=3, steps=3, guidance=5.0)
    np.testing.assert_allclose(b.latents, a.latents, rtol=1e-3, atol=1e-3)


def test_openvino_bad_options(tiny_fp32):
    from sdopt.contract.errors import SdoptError

    with pytest.raises(SdoptError, match="precision"):
        Pipeline(tiny_fp32, "openvino", precision="int3")
    with pytest.raises(SdoptError, match="device 'NPU9'"):
        Pipeline(tiny_fp32, "openvino", device="NPU9")
