"""Recipes are strict: unknown keys refused at every level, every value of its option's type, sizes
checked against the model before any calibration is recorded, flags that a recipe would ignore refused."""

import time

import pytest
from reliability_helpers import fails

QUICK = ["--model", "arch:tiny", "--calib-num-prompts", "1", "--calib-steps", "2"]


def _recipe(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize("text, message", [
    ("pases:\n  - pass: quantize\n", "unknown key 'pases'"),
    ("passes:\n  - pass: quantize\n    split_shortcuts: \"no\"\n", "split_shortcuts must be true or false, got 'no'"),
    ("passes:\n  - pass: quantize\n    calibration: 5\n", "calibration: must be a mapping of options, got 5"),
    ("passes:\n  - pass: quantize\n    skip: conv_in\n", "skip must be a list, got 'conv_in'"),
    ("passes:\n  - pass: quantize\n    skip: [1]\n", "skip[0] must be a string"),
    ("passes:\n  - pass: quantize\n    calibration: {num_prompts: 1.5}\n", "num_prompts must be an integer"),
    ("passes:\n  - pass: quantize\n    calibration: {num_prompts: 1e9}\n", "num_prompts must be an integer"),
    ("passes:\n  - pass: quantize\n    calibration: {intervals: '4'}\n", "intervals must be an integer"),
    ("passes:\n  - pass: quantize\n    calibration: {guidance: .nan}\n", "guidance must be a finite number"),
    ("passes:\n  - pass: quantize\n    smoothquant: .inf\n", "smoothquant must be a finite number"),
    ("passes:\n  - pass: quantize\n    weight_bits: true\n", "weight_bits must be an integer, got True"),
    ("passes:\n  - pass: quantize\n    calibration: {steps: 20, bogus: 1}\n", "unknown option(s) bogus"),
    ("passes:\n  - pass: quantize\n    alpha: 0.5\n", "unknown option(s) alpha"),
    ("passes:\n  - pass: 5\n", "unknown pass 5"),
    ("passes:\n  - quantize\n", "each pass must be a mapping"),
    ("passes: {pass: quantize}\n", "'passes' must be a list"),
    ("name: [1]\npasses: []\n", "'name' must be a non-empty string"),
    ("- pass: quantize\n", "expected a mapping with a 'passes' list"),
    ("passes: [\n", "invalid YAML"),
    (b"passes: []\nname: \xff\xfe\n", "not UTF-8 text"),
    ("passes:\n  - pass: quantize\n    calibration: {intervals: 100000000}\n", "must be <= 1000"),
    ("passes:\n  - pass: quantize\n    calibration: {size: 80000}\n", "over the limit of 4096 pixels"),
    ("passes:\n  - pass: quantize\n    calibration: {seed: -1}\n", "calibration seed -1"),
    ("passes:\n  - pass: quantize\n    group_size: 100000000\n", "group_size must be <= 65536"),
])
def test_bad_recipe_file_refused_at_once(capsys, tmp_path, text, message):
    start = time.perf_counter()
    line = fails(capsys, ["compress", "--model", "arch:tiny", "--recipe", _recipe(tmp_path, text),
                          "--out", tmp_path / "out"])
    assert message in line
    assert time.perf_counter() - start < 10 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--calib-num-prompts", "1000000000"], "only 8 prompts are available"),
    (["--calib-intervals", "8", "--calib-steps", "4"], "calibration intervals 8 > calibration steps 4"),
    (["--calib-sampling", "every", "--calib-every", "9", "--calib-steps", "4"], "every 9 > calibration steps 4"),
    (["--calib-size", "40"], "multiple of 32"),
    (["--calib-size", "4096"], "over the limit of 4,194,304"),
])
def test_calibration_sizes_checked_before_recording(capsys, tmp_path, argv, message):
    line = fails(capsys, ["compress", "--model", "arch:tiny", "--recipe", "int8", *argv, "--out", tmp_path / "out"])
    assert message in line
    assert "calibration trajectories" not in capsys.readouterr().err  # nothing recorded
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "fp32", "--calib-intervals", "4"], "--calib-intervals applies to the quantize pass; recipe 'fp32'"),
    (["--recipe", "fp32", "--seed", "3"], "--seed applies to the quantize pass"),
    (["--recipe", "fp32", "--split-shortcuts"], "--split-shortcuts applies to the quantize pass"),
    (["--recipe", "fp32", "--set", "quantize.format=int8"], "--set quantize.format=int8 applies to the quantize pass"),
    (["--recipe", "int8", "--set", "sparsify.ratio=0.5"], "--set sparsify.ratio=0.5: unknown pass 'sparsify'"),
    (["--recipe", "int8", "--set", "prune.blocks=small"], "applies to the prune pass; recipe 'int8' has none"),
    (["--recipe", "int8", "--set", "quantize.bogus=1"], "unknown option(s) bogus"),
    (["--recipe", "int8", "--set", "quantize.split_shortcuts=maybe"], "split_shortcuts must be true or false"),
    (["--recipe", "int8", "--set", "quantize"], "expected PASS.KEY=VALUE"),
    (["--recipe", "int8", "--set", "quantize.format.x=1"], "format is not a mapping"),
    (["--recipe", "fp8", "--smoothquant", "0.5"], "SmoothQuant applies to int8"),
    (["--recipe", "int8", "--skip", "block,conv"], "quantization matched no layer"),
    (["--recipe", "int8", "--auto-skip", "0"], "auto_skip 0.0 dB must lie in (0, 200]"),
    (["--recipe", "int3"], "unknown recipe 'int3'"),
    (["--recipe", "int8", "--calib-prompts", "missing.txt"], "no such file"),
])
def test_flags_that_do_not_fit_the_recipe(capsys, tmp_path, argv, message):
    line = fails(capsys, ["compress", "--model", "arch:tiny", *argv, "--out", tmp_path / "out"])
    assert message in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "no prompts in the file"), (b"a red circle\n\xff\n", "not UTF-8 text (byte 13)"),
    (b"x" * (17 << 20), "larger than 16 MiB"),
])
def test_calibration_prompts_file(capsys, tmp_path, content, message):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(content)
    line = fails(capsys, ["compress", *QUICK, "--recipe", "int8", "--calib-prompts", prompts,
                          "--out", tmp_path / "out"])
    assert message in line


@pytest.mark.parametrize("text, value", [("1e-5", 1e-5), ("2.5E+2", 250.0), ("3", 3), ("1e5x", "1e5x")])
def test_set_values_read_numbers_as_people_write_them(text, value):
    """YAML 1.1 reads 1e-5 as a string; sdopt reads it as the number (and refuses non-numbers where one is due)."""
    from sdopt.recipes.recipe import parse_set

    parsed = parse_set(f"lcm.lr={text}").value
    assert parsed == value and type(parsed) is type(value)
