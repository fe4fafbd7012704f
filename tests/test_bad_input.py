"""Bad input: one clear line on stderr, exit code 2, no artifact left behind."""

import json
import os
import shutil

import pytest

from sdopt.cli import main


def _fails(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("sdopt ") and "error:" in err[-1]
    return err[-1]


def _no_artifact(parent, name):
    leftovers = [p for p in os.listdir(parent) if name in p]
    assert leftovers == [], leftovers


def test_unknown_recipe(capsys, tmp_path):
    line = _fails(capsys, ["compress", "--model", "arch:tiny", "--recipe", "int3", "--out", str(tmp_path / "out-art")])
    assert "unknown recipe 'int3'" in line
    _no_artifact(tmp_path, "out-art")


def test_unknown_model(capsys, tmp_path):
    line = _fails(capsys, ["compress", "--model", "arch:sd9", "--out", str(tmp_path / "out-art")])
    assert "unknown architecture 'sd9'" in line
    line = _fails(capsys, ["compress", "--model", "no-such-model", "--out", str(tmp_path / "out-art")])
    assert "unknown model source" in line
    _no_artifact(tmp_path, "out-art")


def test_folder_that_is_not_a_pipeline(capsys, tmp_path):
    (tmp_path / "notapipe").mkdir()
    (tmp_path / "notapipe" / "README").write_text("hello")
    line = _fails(capsys, ["compress", "--model", str(tmp_path / "notapipe"), "--out", str(tmp_path / "out-art")])
    assert "not a diffusers pipeline folder" in line
    _no_artifact(tmp_path, "out-art")


def test_recipe_file_with_unknown_option(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: quantize\n    format: int8\n    alpha: 0.5\n")
    line = _fails(capsys, ["compress", "--model", "arch:tiny", "--recipe", str(recipe), "--out", str(tmp_path / "out-art")])
    assert "unknown option(s) alpha" in line


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "fp8", "--smoothquant", "0.5"], "SmoothQuant applies to int8"),
    (["--recipe", "fp32", "--split-shortcuts"], "--split-shortcuts needs a quantizing recipe"),
    (["--recipe", "int8", "--skip", "block,conv"], "quantization matched no layer"),
])
def test_quantize_options_that_do_not_fit(capsys, tmp_path, argv, message):
    line = _fails(capsys, ["compress", "--model", "arch:tiny", "--out", str(tmp_path / "out-art"),
                           "--calib-steps", "1", "--calib-num-prompts", "1", *argv])
    assert message in line
    _no_artifact(tmp_path, "out-art")


def test_unwritable_out(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a path under a file instead
            target = tmp_path / "afile" / "out"
            (tmp_path / "afile").write_text("x")
        else:
            target = locked / "out"
        line = _fails(capsys, ["compress", "--model", "arch:tiny", "--out", str(target)])
        assert "cannot write there" in line or "exists and is not a folder" in line
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("size", ["60", "0"])
def test_height_not_multiple_of_8(capsys, tiny_fp32, tmp_path, size):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tiny_fp32), "--prompt", "x", "--out", str(tmp_path / "x.png"), "--height", size])
    assert exit_info.value.code == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_size_not_supported_by_model(capsys, tiny_fp32, tmp_path):
    # multiple of 8 pixels, but not of the UNet's down-sampling (8 * 4 for arch:tiny)
    line = _fails(capsys, ["run", str(tiny_fp32), "--prompt", "x", "--out", str(tmp_path / "x.png"), "--height", "40"])
    assert "multiple of 32" in line
    assert not (tmp_path / "x.png").exists()


@pytest.fixture
def artifact_copy(tiny_fp32, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_fp32, copy)
    return copy


def test_missing_file(capsys, artifact_copy, tmp_path):
    (artifact_copy / "vae_decoder" / "model.onnx").unlink()
    line = _fails(capsys, ["run", str(artifact_copy), "--prompt", "x", "--out", str(tmp_path / "x.png")])
    assert "missing file vae_decoder/model.onnx" in line
    assert not (tmp_path / "x.png").exists()


def test_corrupt_file(capsys, artifact_copy, tmp_path):
    with open(artifact_copy / "unet" / "model.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    line = _fails(capsys, ["run", str(artifact_copy), "--prompt", "x", "--out", str(tmp_path / "x.png")])
    assert "unet/model.onnx is corrupt" in line


def test_manifest_sha_mismatch(capsys, artifact_copy, tmp_path):
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["files"]["tokenizer/tokenizer.json"] = "0" * 64
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    line = _fails(capsys, ["run", str(artifact_copy), "--prompt", "x", "--out", str(tmp_path / "x.png")])
    assert "tokenizer/tokenizer.json is corrupt" in line


def test_not_an_artifact(capsys, tmp_path):
    line = _fails(capsys, ["run", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "x.png")])
    assert "not an sdopt artifact" in line


def test_failed_compress_keeps_previous_artifact(capsys, artifact_copy, tmp_path, monkeypatch):
    """A failure during export leaves neither a partial folder nor a damaged older artifact."""
    import sdopt.export.writer as writer

    def broken(_source):
        raise RuntimeError("simulated crash during export")

    monkeypatch.setattr(writer, "_unet_graph", broken)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(RuntimeError):
        main(["compress", "--model", "arch:tiny", "--out", str(artifact_copy)])
    assert sorted(os.listdir(tmp_path)) == before
    assert (artifact_copy / "manifest.json").is_file()
