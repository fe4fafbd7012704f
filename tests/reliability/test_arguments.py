"""Arguments are checked before any work: steps within what the scheduler supports, seeds in range,
images within the pixel budget, text that is valid UTF-8; each bad one is one line and exit code 2."""

import os

import pytest
from reliability_helpers import fails

from sdopt.contract.limits import MAX_PIXELS


@pytest.mark.parametrize("flags, message", [
    (["--steps", "1001"], "over the limit of 1000 steps"), (["--steps", "0"], "not a positive integer"),
    (["--steps", "ten"], "'ten' is not an integer"), (["--seed", "-1"], "not in [0, 4294967295]"),
    (["--seed", str(2 ** 32)], "not in [0, 4294967295]"), (["--seed", "1.5"], "not an integer"),
    (["--height", "100000"], "over the limit of 4096 pixels"), (["--height", "60"], "not a positive multiple of 8"),
    (["--height", "0"], "not a positive multiple of 8"), (["--height", "40"], "multiple of 32"),
    (["--height", "4096", "--width", "4096"], f"over the limit of {MAX_PIXELS:,}"),
    (["--scheduler", "pndm"], "invalid choice"), (["--backend", "cuda"], "invalid choice"),
    (["--device", "GPU"], "--device applies to --backend openvino"),
    (["--prompt", "caf\udce9"], "--prompt is not valid UTF-8"),
    (["--negative-prompt", "\udcff"], "--negative-prompt is not valid UTF-8"),
    (["--prompt", "x" * 10_001], "longer than 10000 characters"),
    (["--threads", "2147483648"], "more than this machine's"), (["--threads", "2000"], "more than this machine's"),
    (["--threads", "0"], "not a positive integer"), (["--guidance", "101"], "over the limit of 100"),
    (["--vae-tile", "-8"], "not in [0, 4096]"), (["--vae-tile", "7"], "a multiple of"),
])
def test_run_arguments(capsys, tiny_fp32, png, flags, message):
    prompt = [] if "--prompt" in flags else ["--prompt", "a red circle"]
    line = fails(capsys, ["run", tiny_fp32, *prompt, "--out", png, *flags])
    assert message in line and "sampling" not in capsys.readouterr().err
    assert not png.exists()


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe", "not UTF-8 text"), (b"\n\n", "no prompts in the file"), (None, "no such file"), ("dir", "not a file"),
])
def test_eval_prompts_file(capsys, tiny_fp32, tmp_path, content, message):
    prompts = tmp_path / "p.txt"
    if content == "dir":
        prompts.mkdir()
    elif content is not None:
        prompts.write_bytes(content)
    line = fails(capsys, ["eval", tiny_fp32, "--prompts", prompts])
    assert message in line


@pytest.mark.parametrize("flags, message", [
    (["--steps", "5000"], "over the limit of 1000 steps"), (["--guidance", "nan"], "not a finite number"),
    (["--reference", "nowhere"], "does not exist"), (["--seeds", "65"], "not in [1, 64]"),
    (["--threads", "4096"], "more than this machine's"), (["--model", "arch:tiny", "--reference", "x"], "not both"),
])
def test_eval_arguments(capsys, tiny_fp32, flags, message):
    assert message in fails(capsys, ["eval", tiny_fp32, *flags])


@pytest.mark.parametrize("flags, message", [
    (["--format", "tensorrt", "--workspace", "-1"], "--workspace: -1.0 is not in (0, 1024]"),
    (["--format", "tensorrt", "--height", "10:5:1"], "0 < MIN <= OPT <= MAX"),
    (["--format", "openvino", "--timing-cache", "t.cache"], "--timing-cache applies to --format tensorrt"),
    (["--format", "openvino", "--height", "64"], "(or to --format openvino with --static)"),
])
def test_build_arguments(capsys, tiny_fp32, flags, message):
    assert message in fails(capsys, ["build", tiny_fp32, *flags])


@pytest.mark.parametrize("flags, message", [
    (["--height", "8192"], "over the limit of 4096 pixels"), (["--backends", "cuda"], "unknown backend 'cuda'"),
    (["--peers", "onnxstream"], "unknown peer 'onnxstream'"), (["--peers", "none"], "nothing to measure"),
    (["--backends", ","], "name at least one of"), (["--vae-tile", "-8"], "not in [0, 4096]"),
    (["--vae-tile", "7"], "a multiple of"), (["--runs", "1001"], "not in [1, 1000]"),
    (["--warmup", "0"], "not in [1, 100]"), (["--threads", "100000"], "more than this machine's"),
])
def test_bench_arguments(capsys, tiny_fp32, flags, message):
    artifacts = [] if flags == ["--peers", "none"] else [tiny_fp32]
    assert message in fails(capsys, ["bench", *artifacts, *flags])


@pytest.mark.parametrize("model, message", [("arch:sd9", "unknown architecture 'sd9'"),
                                            ("no-such-model", "unknown model source")])
def test_unknown_model(capsys, tmp_path, model, message):
    assert message in fails(capsys, ["compress", "--model", model, "--out", tmp_path / "out"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("index, message", [
    (None, "not a diffusers pipeline folder"), (b"\xff", "not UTF-8 text"), (b"[1]", "holds a None"),
    (b'{"_class_name": "HunyuanDiTPipeline"}', "holds a HunyuanDiTPipeline"),
    (b'{"_class_name": "StableDiffusionPipeline", "_sdopt_version": "0.1"}', "is an sdopt artifact (ONNX graphs)"),
])
def test_model_folder_that_is_not_a_pipeline(capsys, tmp_path, index, message):
    folder = tmp_path / "notapipe"
    folder.mkdir()
    (folder / "README").write_text("hello")
    if index is not None:
        (folder / "model_index.json").write_bytes(index)
    assert message in fails(capsys, ["compress", "--model", folder, "--out", tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_not_an_artifact(capsys, tmp_path, png):
    assert "not an sdopt artifact" in fails(capsys, ["run", tmp_path, "--prompt", "x", "--out", png])
    assert "does not exist" in fails(capsys, ["run", tmp_path / "nope", "--prompt", "x", "--out", png])
    os.mkfifo(tmp_path / "manifest.json")
    assert "not an sdopt artifact" in fails(capsys, ["run", tmp_path, "--prompt", "x", "--out", png])


LONG = "x" * 300  # over the 255 bytes a file name may have


@pytest.mark.parametrize("argv, flag", [
    (["run", "ART", "--prompt", "x", "--out", f"{LONG}.png"], "--out"), (["run", LONG, "--prompt", "x"], ""),
    (["compress", "--model", "arch:tiny", "--out", LONG], ""),
    (["compress", "--model", "arch:tiny", "--lora", f"{LONG}.safetensors"], "lora"),
    (["compress", "--model", "arch:tiny", "--recipe", f"{LONG}.yaml"], ""),
    (["bench", "ART", "--peers", "none", "--json", f"{LONG}.json"], ""),
])
def test_names_too_long_are_one_line(capsys, tiny_fp32, tmp_path, argv, flag):
    argv = [str(tiny_fp32) if a == "ART" else str(tmp_path / a) if a.startswith(LONG) else a for a in argv]
    if argv[0] == "run" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "o.png")]
    if argv[0] == "compress" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "o")]
    line = fails(capsys, argv)
    assert "too long" in line.lower() and flag in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "int8+int8"], "the quantize pass stands in it twice"),
    (["--recipe", "int8", "--set", "quantize.skip=" + "[" * 5000 + "]" * 5000], "nested too deeply"),
    (["--recipe", "int8", "--set", "quantize.skip=" + "[" * 17 + "]" * 17], "nested too deeply"),
])
def test_recipes_refused_before_work(capsys, tmp_path, argv, message):
    assert message in fails(capsys, ["compress", "--model", "arch:tiny", *argv, "--out", tmp_path / "o"])


def test_a_size_whose_attention_cannot_fit_is_refused_before_work(capsys, tinyshapes_fp32, png):
    """tiny-shapes at 2048x2048 (within the pixel limits): its first attention level holds 262,144 tokens, a
    512 GiB score matrix for the guided batch; refused before sampling, in one line, not by the engine's log."""
    line = fails(capsys, ["run", tinyshapes_fp32, "--prompt", "x", "--height", "2048", "--width", "2048",
                          "--out", png])
    assert "needs 512.0 GiB for one score matrix (262,144 tokens)" in line
    assert "sampling" not in capsys.readouterr().err and not png.exists()
