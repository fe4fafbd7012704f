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
