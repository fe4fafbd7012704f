"""Nothing outside the artifact is read or written: names and paths in a manifest are plain, relative and
inside the folder; builds write into the artifact alone."""

import os

import pytest
from reliability_helpers import fails, manifest_of, tree, write_manifest

from sdopt.app.cli import main


@pytest.mark.parametrize("name", ["../../x", "unet/../../x", "/tmp/x", "openvino", "tokenizer", "Unet", ".hidden",
                                  "a" * 65, ""])
def test_component_names_must_be_plain(capsys, artifact_copy, tmp_path, name):
    manifest = manifest_of(artifact_copy)
    manifest["components"][name] = manifest["components"].pop("vae_decoder")
    write_manifest(artifact_copy, manifest)
    before = tree(tmp_path)
    for argv in (["build", artifact_copy, "--format", "openvino"],
                 ["run", artifact_copy, "--prompt", "x", "--out", tmp_path / "x.png"]):
        line = fails(capsys, argv)
        assert "manifest.json" in line and "components" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "tokenizer/../../x", "tokenizer//x", "tokenizer/./x",
                                  "unet/model.onnx", "tokenizer\\..\\x", "~/x"])
def test_listed_paths_stay_inside(capsys, artifact_copy, tmp_path, path):
    manifest = manifest_of(artifact_copy)
    manifest["files"][path] = {"sha256": "0" * 64, "bytes": 0}
    write_manifest(artifact_copy, manifest)
    line = fails(capsys, ["run", artifact_copy, "--prompt", "x", "--out", tmp_path / "x.png"])
    assert "manifest.json" in line and "files" in line


def test_openvino_build_writes_only_inside_the_artifact(capsys, artifact_copy, tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    for variable in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.setenv(variable, str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    def outside_the_artifact():
        return {k: v for k, v in tree(tmp_path).items() if not k.startswith("copy")}

    before = outside_the_artifact()
    assert main(["build", str(artifact_copy), "--format", "openvino"]) == 0
    assert os.listdir(scratch) == [] and outside_the_artifact() == before
    assert sorted(os.listdir(artifact_copy)) == ["manifest.json", "model_index.json", "scheduler", "text_encoder",
                                                 "tokenizer", "unet", "vae_decoder", "vae_encoder"]
    assert {"openvino_model.xml", "openvino_model.bin"} <= set(os.listdir(artifact_copy / "unet"))
