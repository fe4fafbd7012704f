"""`sdopt build --format openvino` works for artifacts whose graphs keep their weights in model.onnx_data
(every SD-sized UNet): the build links the data into its scratch folder instead of pointing outside it."""

import numpy as np
import pytest

from sdopt.app.cli import main
from sdopt.contract.artifact import open_artifact
from sdopt.runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def external_data_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("external") / "fp32-ext"
    assert main(["compress", "--model", "arch:tiny", "--recipe", "fp32", "--external-data", "--out", str(out)]) == 0
    return out


def test_every_graph_has_listed_external_data(external_data_artifact):
    components = open_artifact(external_data_artifact).components
    assert all(set(c["files"]) == {"model.onnx", "model.onnx_data", "config.json"} for c in components.values())
    assert all(c["files"]["model.onnx_data"]["bytes"] > c["files"]["model.onnx"]["bytes"] for c in components.values())


def test_openvino_build_and_run(external_data_artifact, capsys):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    assert main(["build", str(external_data_artifact), "--format", "openvino"]) == 0
    build = open_artifact(external_data_artifact).build("openvino")
    graphs = ("text_encoder", "unet", "vae_decoder", "vae_encoder")
    assert sorted(build["files"]) == [f"{c}/openvino_model.{e}" for c in graphs for e in ("bin", "xml")]
    assert not [p for p in external_data_artifact.iterdir() if p.name.startswith(".")]  # no scratch left
    request = dict(seed=2, steps=3, guidance=4.0)
    ours = Pipeline(external_data_artifact, "openvino", precision="f32")("a red circle", **request).image_float
    reference = Pipeline(external_data_artifact)("a red circle", **request).image_float
    np.testing.assert_allclose(ours, reference, atol=2e-3)
