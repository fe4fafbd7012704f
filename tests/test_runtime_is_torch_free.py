import subprocess
import sys

import pytest

FORBIDDEN = ("torch", "diffusers", "transformers", "modelopt", "onnx", "sdopt.compress", "sdopt.export",
             "sdopt.calibration")


@pytest.mark.parametrize("modules", [
    "sdopt.runtime, sdopt.runtime.pipeline, sdopt.runtime.schedulers, sdopt.runtime.backends.onnxruntime",
    "sdopt.runtime.backends.openvino, sdopt.runtime.backends.tensorrt",
])
def test_runtime_imports_no_torch(modules):
    code = (f"import sys, {modules}; "
            f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_run_and_eval_with_a_reference_import_no_torch(tiny_fp32, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    code = ("import sys; from sdopt.app.cli import main; "
            f"assert main(['run', {str(tiny_fp32)!r}, '--prompt', 'x', '--steps', '1', '--out', "
            f"{str(tmp_path / 'x.png')!r}]) == 0; "
            f"assert main(['eval', {str(tiny_fp32)!r}, '--reference', {str(tiny_fp32)!r}, '--prompts', "
            f"{str(prompts)!r}, '--steps', '1', '--json']) == 0; "
            f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
