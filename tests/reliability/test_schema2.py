"""Artifacts written before schema 3 (sdopt's own I/O names, OpenVINO IR under openvino/) still run."""

import shutil

import numpy as np
import onnx
import pytest
from reliability_helpers import manifest_of, rehash, write_manifest

from sdopt.runtime.pipeline import Pipeline

SCHEMA2_NAMES = {"unet": {"out_sample": "noise_pred"}, "vae_decoder": {"latent_sample": "latent", "sample": "image"},
                 "vae_encoder": {"sample": "image"}, "text_encoder": {"last_hidden_state": "hidden_states"}}


def _rename_io(path, names: dict) -> None:
    model = onnx.load(str(path))
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    onnx.save(model, str(path))


def _as_schema2(folder) -> None:
    for component, names in SCHEMA2_NAMES.items():
        _rename_io(folder / component / "model.onnx", names)
        rehash(folder, f"{component}/model.onnx")
    manifest = manifest_of(folder)
    for component, names in SCHEMA2_NAMES.items():
        for io in [*manifest["components"][component]["inputs"], *manifest["components"][component]["outputs"]]:
            io["name"] = names.get(io["name"], io["name"])
    manifest["schema_version"] = 2
    write_manifest(folder, manifest)


def test_a_schema2_artifact_gives_the_same_image(tiny_fp32, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(tiny_fp32, folder)
    _as_schema2(folder)
    assert manifest_of(folder)["components"]["unet"]["outputs"][0]["name"] == "noise_pred"
    request = dict(seed=1, steps=3, guidance=4.0)
    old = Pipeline(folder)("a red circle", **request)
    new = Pipeline(tiny_fp32)("a red circle", **request)
    np.testing.assert_array_equal(old.image, new.image)
    strength = Pipeline(folder)("a red circle", image=new.image, strength=0.5, **request)  # the VAE encoder too
    assert strength.image.shape == new.image.shape


def test_a_schema2_openvino_build_is_read_where_it_lies(tiny_fp32, tmp_path):
    ov = pytest.importorskip("openvino", reason="the openvino extra is not installed")
    folder = tmp_path / "old"
    shutil.copytree(tiny_fp32, folder)
    _as_schema2(folder)
    manifest = manifest_of(folder)
    files = {}
    for name in manifest["components"]:
        xml = folder / "openvino" / name / "model.xml"
        xml.parent.mkdir(parents=True)
        ov.save_model(ov.convert_model(str(folder / name / "model.onnx")), str(xml), compress_to_fp16=False)
        for part in (xml, xml.with_suffix(".bin")):
            files[part.relative_to(folder).as_posix()] = {"sha256": "0" * 64, "bytes": 0}
    manifest["builds"] = {"openvino": {"files": files, "openvino_version": ov.get_version(), "seconds": 0.0}}
    write_manifest(folder, manifest)
    for rel in files:
        rehash(folder, rel)
    request = dict(seed=1, steps=3, guidance=4.0)
    old = Pipeline(folder, "openvino", precision="fp32")("a red circle", **request)
    new = Pipeline(tiny_fp32)("a red circle", **request)
    np.testing.assert_allclose(old.image_float, new.image_float, atol=2e-3)
