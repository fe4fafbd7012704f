"""Same source, recipe, calibration and seed: byte-identical artifact files."""

import json

import pytest

from sdopt.app.cli import main


@pytest.mark.parametrize("options", [["--recipe", "int8", "--calib-intervals", "2"],
                                     ["--recipe", "fp8"],
                                     ["--recipe", "w4a8", "--split-shortcuts"]], ids=["int8", "fp8", "w4a8"])
def test_compress_twice_gives_identical_files(options, tmp_path, monkeypatch):
    def compress(name: str) -> dict:
        monkeypatch.setenv("SDOPT_CACHE", str(tmp_path / f"cache-{name}"))  # record the trajectories anew
        out = tmp_path / name
        assert main(["compress", "--model", "arch:tiny", "--out", str(out), "--calib-steps", "2",
                     "--calib-num-prompts", "1", *options]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        files = {f"{name}/{f}": meta["sha256"] for name, c in manifest["components"].items()
                 for f, meta in c["files"].items()}
        return {**files, **manifest["files"]}

    first, second = compress("a"), compress("b")
    assert any(path.startswith("unet/") for path in first)
    assert first == second
