"""Ctrl-C (and SIGTERM) at any point: exit code 130 (143), nothing written, no parent folder created, even
when the KeyboardInterrupt was swallowed by a finalizer."""

import os
import signal
import subprocess
import sys
import time

import pytest

from sdopt.app import cli
from sdopt.contract import interrupts
from sdopt.contract.safe_io import write_atomically


class _Finalizer:
    """Runs sdopt's SIGINT handler inside a finalizer, as a Ctrl-C that lands there does: Python prints
    "Exception ignored in ... __del__" and goes on. (The handler is called directly: a real signal raised
    inside the test process can crash it once OpenVINO's threads run; the subprocess tests below send real
    signals.)"""

    def __del__(self):
        interrupts._handler(signal.SIGINT, None)


def test_interrupt_swallowed_by_a_finalizer_still_ends_the_command(monkeypatch, tmp_path, capsys):
    out = tmp_path / "image.png"

    def command(_args):
        _Finalizer()
        write_atomically(out, lambda tmp: open(tmp, "w").write("image"))

    monkeypatch.setitem(cli.COMMANDS, "run", command)
    assert cli.main(["run", str(tmp_path), "--prompt", "x", "--out", str(out)]) == 130
    assert "sdopt run: interrupted" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_interrupt_that_nothing_saw_still_sets_the_exit_code(monkeypatch, tmp_path):
    monkeypatch.setitem(cli.COMMANDS, "run", lambda _args: _Finalizer())
    assert cli.main(["run", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "x.png")]) == 130
    monkeypatch.setitem(cli.COMMANDS, "run", lambda _args: None)
    assert cli.main(["run", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "x.png")]) == 0  # forgotten


def _interrupt(argv, when: float | str, signum=signal.SIGINT):
    """Start the CLI, send `signum` after `when` seconds or once its stderr shows `when`; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "sdopt.app.cli", *map(str, argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    seen = b""
    if isinstance(when, str):
        while when.encode() not in seen and proc.poll() is None:
            seen += os.read(proc.stderr.fileno(), 4096)
    else:
        time.sleep(when)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, (seen + err).decode()


@pytest.mark.parametrize("when", [0.3, "calibration trajectories", "calibrating quantizers", "exporting ONNX"])
def test_ctrl_c_during_compress(tmp_path, when):
    out = tmp_path / "new" / "int8"
    code, err = _interrupt(["compress", "--model", "arch:tiny", "--recipe", "int8", "--calib-num-prompts", "2",
                            "--calib-steps", "8", "--out", out], when)
    assert code == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "sdopt compress: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_run(tmp_path, tiny_fp32):
    out = tmp_path / "x.png"
    code, err = _interrupt(["run", tiny_fp32, "--prompt", "x", "--out", out, "--steps", "999"], "sampling:",
                           signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    assert not out.exists() and list(tmp_path.iterdir()) == []
