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

from sdopt.app.cli import main
from sdopt.contract.artifact import open_artifact
from sdopt.contract.safe_io import STAGING_MARKER

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

    def leftover(kind, name, pid, marker=True):
        folder = tmp_path / f".art.{kind}-{pid}-{name}"
        folder.mkdir()
        (folder / "unet").mkdir()
        if marker:
            (folder / STAGING_MARKER).write_text(json.dumps({"pid": pid, "host": host, "kind": kind, "name": "art"}))
        return folder

    stale, alive, unmarked = leftover("partial", "a1", dead), leftover("partial", "b2", live), \
        leftover("partial", "c3", dead, marker=False)
    stale_tmp, stale_old = leftover("tmp", "t1", dead), leftover("old", "o1", dead)
    users = tmp_path / ".art.partial-notes"  # not our naming: a user's
    users.mkdir()
    assert main(["compress", *QUICK, "--out", str(tmp_path / "art")]) == 0
    assert not stale.exists() and not stale_tmp.exists() and not stale_old.exists()
    assert alive.exists() and unmarked.exists() and users.exists()


@pytest.mark.parametrize("command", ["run", "compress"])
def test_files_named_like_leftovers_but_unmarked_are_never_deleted(capsys, tiny_fp32, tmp_path, command):
    """A user's files whose names look like sdopt's temporary ones (dead pid, our pattern) carry no marker: kept."""
    dead = _dead_pid()
    name = "pic.png" if command == "run" else "art"
    (tmp_path / f".{name}.tmp-{dead}-mine").write_text("n")
    content = tmp_path / f".{name}.old-{dead}-x" / "content"
    content.mkdir(parents=True)
    (content / "thesis.txt").write_text("p")
    (tmp_path / f".{name}.partial-{dead}-y").mkdir()
    before = {k: v for k, v in tree(tmp_path).items() if k.startswith(".")}
    argv = ["run", tiny_fp32, "--prompt", "x", "--steps", "1", "--out", tmp_path / name] if command == "run" \
        else ["compress", *QUICK, "--out", tmp_path / name]
    assert main([str(a) for a in argv]) == 0
    assert {k: v for k, v in tree(tmp_path).items() if k.startswith(".")} == before


def test_sigkill_leftovers_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "art"
    proc = subprocess.Popen([sys.executable, "-m", "sdopt.app.cli", "compress", "--model", "arch:tiny", "--recipe", "int8",
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


@pytest.mark.parametrize("json_name, plot", [("res.png", None), ("res.png", "res.png"), ("a.png", "b/../a.png")])
def test_bench_never_writes_one_output_over_another(capsys, tiny_fp32, tmp_path, json_name, plot):
    (tmp_path / "b").mkdir()
    argv = ["bench", tiny_fp32, "--peers", "none", "--runs", "1", "--json", tmp_path / json_name]
    line = fails(capsys, argv + (["--plot", tmp_path / plot] if plot else []))
    assert "would be written over it" in line and not (tmp_path / json_name).exists()


@pytest.mark.parametrize("command", ["run", "eval", "bench"])
def test_outputs_never_land_inside_an_artifact(capsys, artifact_copy, command):
    before = tree(artifact_copy)
    target = artifact_copy / "unet" / "x.png"
    argv = {"run": ["run", artifact_copy, "--prompt", "x", "--out", target],
            "eval": ["eval", artifact_copy, "--reference", artifact_copy, "--grid", target],
            "bench": ["bench", artifact_copy, "--peers", "none", "--json", artifact_copy / "r.json"]}[command]
    assert "inside the artifact" in fails(capsys, argv)
    assert tree(artifact_copy) == before


def test_a_symlink_appearing_at_out_during_compress_is_left_alone(capsys, tmp_path, monkeypatch):
    """The destination is checked again before the rename: a link placed there meanwhile is refused, not
    followed or replaced."""
    from sdopt.contract import artifact

    out = tmp_path / "art"
    commit = artifact.ArtifactWriter.commit

    def commit_after_a_link_appears(self, manifest):
        os.symlink(tmp_path / "nowhere", out)
        return commit(self, manifest)
    monkeypatch.setattr(artifact.ArtifactWriter, "commit", commit_after_a_link_appears)
    assert "is a symbolic link" in fails(capsys, ["compress", *QUICK, "--out", out])
    assert out.is_symlink() and not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


@pytest.mark.parametrize("command", ["run", "compress"])
def test_a_full_disk_is_one_line_naming_the_output(tmp_path, tiny_fp32, command):
    """The system's refusal to write (here a file size limit: EFBIG, as ENOSPC on a full disk) ends in one line
    naming what was being written, with nothing left behind."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    out = tmp_path / ("o.png" if command == "run" else "art")
    argv = ["run", str(tiny_fp32), "--prompt", "x", "--steps", "1", "--height", "256", "--width", "256", "--out",
            str(out)] if command == "run" else ["compress", *QUICK, "--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "sdopt.app.cli", *argv], capture_output=True, text=True,
                          preexec_fn=limit, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith(f"sdopt {command}: error: cannot write") and "File too large" in lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
