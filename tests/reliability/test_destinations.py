"""Writes: compress replaces only an sdopt artifact, never a user's folder or files; `--out` paths are
checked before any work; a failed or killed run leaves nothing that looks valid, and what a killed run
left is removed by the next one."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from reliability_helpers import fails, tree

from sdopt.artifact import open_artifact
from sdopt.cli import main
from sdopt.safe_io import STAGING_MARKER

QUICK = ["--model", "arch:tiny", "--recipe", "fp32"]


def test_folder_with_a_foreign_manifest_is_not_replaced(capsys, tmp_path):
    app = tmp_path / "webapp"
    (app / "static").mkdir(parents=True)
    (app / "manifest.json").write_text(json.dumps({"name": "My App", "icons": [], "start_url": "/"}))
    (app / "static" / "index.html").write_text("<html></html>")
    before = tree(app)
    line = fails(capsys, ["compress", *QUICK, "--out", app])
    assert "is not an sdopt artifact; not replaced" in line
    assert tree(app) == before


@pytest.mark.parametrize("extra", ["notes.txt", "unet/my_lora.safetensors"])
def test_artifact_holding_a_users_file_is_not_replaced(capsys, artifact_copy, extra):
    (artifact_copy / extra).write_text("mine")
    before = tree(artifact_copy)
    line = fails(capsys, ["compress", *QUICK, "--out", artifact_copy])
    assert f"holds {extra}, which is not part of the artifact" in line
    assert tree(artifact_copy) == before


def test_an_artifact_is_replaced_whole(capsys, artifact_copy):
    (artifact_copy / "unet" / "model.onnx").write_bytes(b"damaged")  # still ours: listed in its manifest
    assert main(["compress", *QUICK, "--out", str(artifact_copy)]) == 0
    open_artifact(artifact_copy)
    assert not [p for p in os.listdir(artifact_copy.parent) if p.startswith(".copy.")]


@pytest.mark.parametrize("kind", ["file", "non-empty folder", "symlink", "under a file"])
def test_out_that_cannot_be_an_artifact(capsys, tmp_path, kind):
    target = tmp_path / "out"
    if kind == "file":
        target.write_text("x")
    elif kind == "non-empty folder":
        target.mkdir()
        (target / "photo.jpg").write_bytes(b"\xff\xd8")
    elif kind == "symlink":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
    else:
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "out"
    before = tree(tmp_path)
    line = fails(capsys, ["compress", *QUICK, "--out", target])
    assert "--out" in line
    assert tree(tmp_path) == before


def test_failed_compress_leaves_no_parent_folders_and_keeps_the_old_artifact(capsys, artifact_copy, tmp_path,
                                                                             monkeypatch):
    import sdopt.export.writer as writer

    def broken(_source, _spec):
        raise RuntimeError("simulated crash during export")

    monkeypatch.setattr(writer, "export_graph", broken)
    before = tree(tmp_path)
    for out in (tmp_path / "new" / "deeper" / "art", artifact_copy):
        with pytest.raises(RuntimeError):
            main(["compress", *QUICK, "--out", str(out)])
        assert tree(tmp_path) == before
    open_artifact(artifact_copy)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_processes_are_removed(capsys, tmp_path):
    dead, live = _dead_pid(), os.getpid()
    host = socket.gethostname()

    def staging(name, pid, marker=True):
        folder = tmp_path / f".art.partial-{pid}-{name}"
        folder.mkdir()
        (folder / "unet").mkdir()
        if marker:
            (folder / STAGING_MARKER).write_text(json.dumps({"pid": pid, "host": host}))
        return folder

    stale, alive, unmarked = staging("a1", dead), staging("b2", live), staging("c3", dead, marker=False)
    stale_tmp = tmp_path / f".art.tmp-{dead}-x7"
    stale_tmp.write_text("half")
    users = tmp_path / ".art.partial-notes"  # not our naming: a user's
    users.mkdir()
    assert main(["compress", *QUICK, "--out", str(tmp_path / "art")]) == 0
    assert not stale.exists() and not stale_tmp.exists()
    assert alive.exists() and unmarked.exists() and users.exists()


def test_sigkill_leftovers_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "art"
    proc = subprocess.Popen([sys.executable, "-m", "sdopt.cli", "compress", "--model", "arch:tiny", "--recipe", "int8",
                             "--calib-num-prompts", "1", "--calib-steps", "2", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".art.partial-") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".art.partial-")]
    assert partial and not out.exists()
    assert main(["compress", *QUICK, "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


@pytest.mark.parametrize("kind", ["folder", "missing parent", "not png", "parent is a file"])
def test_run_out_checked_before_generating(capsys, tiny_fp32, tmp_path, kind):
    out = {"folder": tmp_path, "missing parent": tmp_path / "no" / "x.png", "not png": tmp_path / "x.jpg",
           "parent is a file": tmp_path / "f" / "x.png"}[kind]
    (tmp_path / "f").write_text("x")
    before = tree(tmp_path)
    start = time.perf_counter()
    line = fails(capsys, ["run", tiny_fp32, "--prompt", "x", "--out", out])
    assert "--out" in line and "sampling" not in capsys.readouterr().err
    assert time.perf_counter() - start < 5
    assert tree(tmp_path) == before


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_bench_outputs_checked_before_measuring(capsys, tiny_fp32, tmp_path, flag):
    line = fails(capsys, ["bench", tiny_fp32, "--peers", "none", flag, tmp_path / "missing" / "r.png"])
    assert flag in line and "does not exist" in line


def test_eval_grid_checked_before_generating(capsys, tiny_fp32, tmp_path):
    line = fails(capsys, ["eval", tiny_fp32, "--grid", tmp_path / "grid.jpg"])
    assert "--grid" in line and "must be a .png" in line
