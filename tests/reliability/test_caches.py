"""Caches recover by themselves: a damaged calibration record is recorded again, a damaged cached
reference made again, each with a note naming the file."""

import pytest

from sdopt.app.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDOPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"\x00" * len(b), lambda b: b""])
def test_damaged_calibration_cache_is_recorded_again(capsys, cache, tmp_path, damage):
    argv = ["compress", "--model", "arch:tiny", "--recipe", "int8", "--calib-num-prompts", "1", "--calib-steps", "2"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    (record,) = (cache / "calibration").iterdir()
    record.write_bytes(damage(record.read_bytes()))
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert f"note: calibration cache {record} is unreadable" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    assert "unreadable" not in capsys.readouterr().err  # recorded again and readable


def test_damaged_reference_cache_is_made_again(capsys, cache, tiny_fp32, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    argv = ["eval", str(tiny_fp32), "--prompts", str(prompts), "--steps", "2", "--json"]
    assert main(argv) == 0
    (reference,) = (cache / "reference").iterdir()
    (reference / "unet" / "model.onnx").write_bytes(b"damaged")
    capsys.readouterr()
    assert main(argv) == 0
    assert f"note: the cached reference {reference} is damaged" in capsys.readouterr().err
    assert main(argv) == 0
    assert "damaged" not in capsys.readouterr().err
