"""Commands print sdopt's own lines and progress only: nothing the libraries log at import or while loading."""

import re
import subprocess
import sys

OWN = re.compile(r"^(exporting ONNX|sampling|note: |wrote )")


def _stderr_lines(*argv):
    done = subprocess.run([sys.executable, "-m", "sdopt.app.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, check=True)
    return [line.strip() for line in re.split(r"[\r\n]", done.stderr) if line.strip()]


def test_compress_and_run_print_only_their_own_lines(tmp_path):
    lines = _stderr_lines("compress", "--model", "arch:tiny", "--out", tmp_path / "a")
    lines += _stderr_lines("run", tmp_path / "a", "--prompt", "a red circle", "--steps", "2", "--out",
                           tmp_path / "x.png")
    assert [line for line in lines if not OWN.match(line)] == [] and any(line.startswith("wrote") for line in lines)
