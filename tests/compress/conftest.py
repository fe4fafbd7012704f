"""A trainer's loss curve under accelerate with one and with two CPU processes (gloo)."""

import json
import os
import shutil
import subprocess
import sys

import pytest


@pytest.fixture
def loss_curves(tmp_path):
    """(compress arguments, pass name) -> {processes: the pass's recorded loss curve} for 1 and 2 processes."""
    def run(arguments: list[str], pass_name: str) -> dict:
        accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
        env = {**os.environ, "SDOPT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
        curves = {}
        for processes in (1, 2):
            out = tmp_path / f"p{processes}"
            # accelerate's multi-process launcher is --multi_gpu; without a GPU the processes meet over gloo
            command = [accelerate, "launch", *(["--multi_gpu"] if processes > 1 else []), "--num_processes",
                       str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                       "-m", "sdopt.app.cli", "compress", *arguments, "--out", str(out)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stderr[-2000:]
            manifest = json.loads((out / "manifest.json").read_text())
            record = next(r for r in manifest["passes"] if r["pass"] == pass_name)
            assert record["processes"] == processes
            curves[processes] = record["loss_curve"]
        assert len(curves[1]) == len(curves[2])
        return curves
    return run
