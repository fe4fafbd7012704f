import subprocess
import sys


def test_runtime_imports_no_torch():
    code = ("import sys, sdopt.runtime, sdopt.runtime.pipeline, sdopt.runtime.schedulers, "
            "sdopt.runtime.backends.onnxruntime; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers', 'modelopt') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
