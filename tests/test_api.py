"""The Python API: the README's example runs as written, and the functions check their input as the CLI does."""

import re
from pathlib import Path

import pytest

import sdopt

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    block = re.search(r"<!-- python-example -->\n```python\n(.*?)```\n<!-- /python-example -->", README.read_text(),
                      re.S)
    assert block, "README.md has no python-example block"
    return block.group(1)


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)
    assert (tmp_path / "artifacts" / "int8" / "manifest.json").is_file() and (tmp_path / "circle.png").is_file()
    assert scope["report"]["recipe"] == "int8" and 0 <= scope["report"]["alignment"] <= 1
    assert [row["name"] for row in scope["result"]["rows"] if "error" not in row]
    assert "alignment" in capsys.readouterr().out


def test_import_loads_neither_torch_nor_an_engine():
    import subprocess
    import sys

    code = "import sys, sdopt; print(sorted({'torch', 'onnxruntime', 'diffusers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_the_functions_are_callable_after_their_modules_are_imported():
    import sdopt.app.bench  # noqa: F401  (the module of the same name, now the package's attribute)
    import sdopt.app.evaluate  # noqa: F401
    import sdopt.compress.quantize  # noqa: F401

    assert all(callable(f) for f in (sdopt.compress, sdopt.evaluate, sdopt.bench, sdopt.Pipeline))


@pytest.mark.parametrize("call, message", [
    (lambda out: sdopt.compress("tiny-shapes", "int8", out, quantize=3), "give a pass's options as quantize="),
    (lambda out: sdopt.compress("tiny-shapes", "int8", out, quantize={"colour": 1}), "colour"),
    (lambda out: sdopt.compress("tiny-shapes", "int9", out), "int9"),
    (lambda out: sdopt.compress("tiny-shapes", "fp32", out, attention="sliced"), "attention 'sliced': choose"),
    (lambda out: sdopt.bench([], peers="none", runs=0), "runs 0 must be an integer in [1, 1000]"),
    (lambda out: sdopt.evaluate(out, seeds=65), "seeds 65 must be an integer in [1, 64]"),
])
def test_bad_input_is_one_error_before_work(tmp_path, call, message):
    with pytest.raises(sdopt.SdoptError, match=re.escape(message)):
        call(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_own_prompts_on_a_reference_model_give_images_but_no_alignment(tinyshapes_fp32, capsys):
    from sdopt.app.cli import main

    report = sdopt.evaluate(tinyshapes_fp32, prompts=["a red circle"], steps=2, progress=False)
    assert report["psnr"] == 100.0 and "alignment" not in report
    assert "not tiny-shapes captions (first: 'a red circle')" in report["alignment_not_measured"]
    prompts = tinyshapes_fp32.parent / "own.txt"
    prompts.write_text("a red circle\n")
    assert main(["eval", str(tinyshapes_fp32), "--prompts", str(prompts), "--steps", "2"]) == 0
    assert "prompt alignment not measured" in capsys.readouterr().out
