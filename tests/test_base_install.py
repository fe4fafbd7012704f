"""The base install (no extras) is the runtime: a fresh venv with it holds no torch, runs an artifact, and the
commands that need the compression extra say so in one line."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "ci" / "constraints.txt"),
                              str(ROOT)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    return venv / "bin"


def test_the_base_install_holds_no_torch_and_runs_an_artifact(base_venv, tiny_fp32, tmp_path):
    listed = subprocess.run([str(base_venv / "pip"), "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert {"sdopt", "onnxruntime", "tokenizers", "numpy"} <= names
    assert not names & {"torch", "diffusers", "transformers", "onnx", "nvidia-modelopt"}
    png = tmp_path / "a.png"
    run = subprocess.run([str(base_venv / "sdopt"), "run", str(tiny_fp32), "--prompt", "a red circle", "--steps", "2",
                          "--out", str(png)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert png.stat().st_size > 0


def test_commands_that_need_the_extra_say_so_in_one_line(base_venv, tiny_fp32, tmp_path):
    compress = subprocess.run([str(base_venv / "sdopt"), "compress", "--recipe", "int8", "--out", str(tmp_path / "x")],
                              capture_output=True, text=True)
    assert compress.returncode == 2 and not (tmp_path / "x").exists()
    assert compress.stderr.strip().splitlines() == [
        "sdopt compress: error: this needs the compression extra (torch, diffusers, onnx, modelopt) (no module "
        "named 'torch'): pip install 'sdopt[compress]'"]
    build = subprocess.run([str(base_venv / "sdopt"), "build", str(tiny_fp32), "--format", "openvino"],
                           capture_output=True, text=True)
    assert build.returncode == 2 and "pip install 'sdopt[openvino]'" in build.stderr
    assert len(build.stderr.strip().splitlines()) == 1
