"""The reliability cases of the newer surfaces (img2img / inpainting inputs, LoRA files, --low-memory, --threads,
--vae-tile, bench outputs, staging clean-up), tried from the command line as a careful user and as an attacker
would, each in its own process with a 30 s limit. A case passes when the command gives the right result, or
exactly one `sdopt CMD: error:` line on stderr with exit code 2 and no traceback, touching no user file and
writing nothing it should not.

    python benchmarks/reliability_cases.py [--work DIR] [--json FILE] [--only CLASS]

Cases that need root (a full or read-only filesystem: tmpfs and bind mounts) are skipped without it, saying so.
Prints a table (class | cases tried | refused cleanly or right | exit codes) and writes the JSON (default
benchmarks/results/reliability_cases.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LIMIT_S = 30.0
SDOPT = [sys.executable, "-m", "sdopt.app.cli"]


@dataclass
class Outcome:
    code: int | None
    err: str
    seconds: float
    timed_out: bool = False

    @property
    def clean_error(self) -> bool:
        """Exit 2, no traceback, and exactly one error line, the last one, from sdopt."""
        lines = [line for line in self.err.strip().splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        return (self.code == 2 and "Traceback" not in self.err and len(errors) == 1 and bool(lines)
                and lines[-1] == errors[0] and lines[-1].startswith("sdopt"))


@dataclass
class Case:
    klass: str
    name: str
    run: object  # (work: Path) -> (Outcome, extra check passed: bool, note)
    expect: str = "error"  # "error": one clean line, exit 2; "ok": exit 0
    result: dict = field(default_factory=dict)


def sdopt(*argv, env=None, limit: float = LIMIT_S, stdin=None) -> Outcome:
    start = time.perf_counter()
    proc = subprocess.Popen([*SDOPT, *map(str, argv)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=stdin or subprocess.DEVNULL, env={**os.environ, **(env or {})},
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=limit)
        return Outcome(proc.returncode, err.decode(errors="replace"), time.perf_counter() - start)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return Outcome(None, err.decode(errors="replace"), time.perf_counter() - start, timed_out=True)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(Path(folder).rglob("*"))}


# ---------------------------------------------------------------------------------------------- fixtures


class Work:
    """Artifacts and input files the cases share, made once under one folder."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "cache"  # SDOPT_CACHE of every case (the fp32 reference is made once, by eval)
        self.art = root / "art"  # tiny-shapes fp32
        self.batched = root / "art-batched"  # the same model exported with batched attention: other graph bytes
        self.env = {"SDOPT_CACHE": str(self.cache)}

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for folder, extra in ((self.art, []), (self.batched, ["--attention", "batched"])):
            if not (folder / "manifest.json").is_file():
                done = sdopt("compress", "--out", folder, *extra, env=self.env, limit=600)
                assert done.code == 0, done.err
        done = sdopt("eval", self.art, "--seeds", "1", "--steps", "2", env=self.env, limit=600)  # caches the reference
        assert done.code == 0, done.err
        self._images()
        self._loras()

    def copy(self, name: str) -> Path:
        target = self.root / "scratch" / name
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.art, target)
        return target

    def scratch(self, name: str) -> Path:
        folder = self.root / "scratch" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def _images(self) -> None:
        import numpy as np
        from PIL import Image

        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(self.root / "rgb.png")
        Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(self.root / "gray16.png")
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(self.root / "mask.png")
        Image.fromarray(np.full((16, 48), 255, np.uint8)).save(self.root / "mask-other-size.png")
        image = Image.fromarray(np.full((48, 32, 3), 90, np.uint8))
        exif = image.getexif()
        exif[0x0112] = 6  # rotated: 48x32 on disk, 32x48 as shown
        image.save(self.root / "exif.jpg", exif=exif)
        (self.root / "huge.png").write_bytes(_png_header(12000, 12000))
        for name in ("fifo.png", "fifo-mask.png"):
            with contextlib.suppress(FileExistsError):
                os.mkfifo(self.root / name)

    def _loras(self) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        _lora_file("arch:tiny", self.root / "other-model.safetensors")  # for another architecture
        own = _lora_file("tiny-shapes", self.root / "own.safetensors")
        save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(own).items()},
                  self.root / "nan.safetensors")


def _lora_file(model: str, path: Path) -> Path:
    """A rank-4 LoRA on the attention projections of `model`'s UNet (made once)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from sdopt.sources.source import load_source

    if not path.is_file():
        unet = load_source(model).pipeline.unet
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=get_peft_model_state_dict(unet),
                                                  weight_name=path.name)
    return path


def _png_header(width: int, height: int) -> bytes:
    """A small PNG that declares a huge image (one compressed row of zeros, the rest missing)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 17000)) \
        + chunk(b"IEND", b"")


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small tmpfs mounted at `path` (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(tempfile.mkdtemp())
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                              capture_output=True).returncode == 0 and \
            subprocess.run(["umount", str(probe)], capture_output=True).returncode == 0
    finally:
        probe.rmdir()


# ------------------------------------------------------------------------------------------------- cases


def cases(w: Work) -> list[Case]:
    long_name = "x" * 300
    out = lambda name: w.scratch(name) / "out.png"  # noqa: E731
    return [
        Case("1 user files deleted", "run --out beside .pic.png.tmp-/.old- look-alikes", lambda: _lookalikes(w, "run"),
             expect="ok"),
        Case("1 user files deleted", "compress --out beside .art.tmp-/.old- look-alikes",
             lambda: _lookalikes(w, "compress"), expect="ok"),
        Case("2 unverified files run", "graph swapped during eval --low-memory", lambda: _swap_during_eval(w)),
        Case("2 unverified files run", "compress --out replaces the folder during eval --low-memory",
             lambda: _replace_during_eval(w)),
        Case("2 unverified files run", "graph swapped before run (hash checked at load)",
             lambda: _swapped_before_run(w)),
        Case("3 reads outside the artifact", "doctored source.spec naming a diffusers folder elsewhere",
             lambda: _doctored_spec(w)),
        Case("3 reads outside the artifact", "doctored source.spec, bench without --model",
             lambda: _doctored_spec(w, command="bench")),
        Case("4 non-finite weights", "LoRA of NaN, fp32",
             lambda: (sdopt("compress", "--lora", w.root / "nan.safetensors", "--out", w.scratch("nan") / "a",
                            env=w.env), True, "")),
        Case("4 non-finite weights", "LoRA of NaN, int8",
             lambda: (sdopt("compress", "--recipe", "int8", "--lora", w.root / "nan.safetensors", "--out",
                            w.scratch("nan8") / "a", env=w.env), True, "")),
        Case("4 non-finite weights", "LoRA scale :1e308",
             lambda: (sdopt("compress", "--lora", f"{w.root / 'own.safetensors'}:1e308", "--out",
                            w.scratch("big") / "a", env=w.env), True, "")),
        Case("5 silently wrong input images", "16-bit grey PNG as --image (scaled, not clipped)",
             lambda: _sixteen_bit(w), expect="ok"),
        Case("5 silently wrong input images", "EXIF-rotated --image (transposed as diffusers does)",
             lambda: _exif(w), expect="ok"),
        Case("5 silently wrong input images", "--mask of another size",
             lambda: (sdopt("run", w.art, "--prompt", "x", "--image", w.root / "rgb.png", "--mask",
                            w.root / "mask-other-size.png", "--out", out("mask")), True, "")),
        Case("5 silently wrong input images", "17 KB PNG declaring 12000x12000",
             lambda: _huge(w)),
        Case("6 results lost", "bench --json out/res.png without --plot",
             lambda: (sdopt("bench", w.art, "--peers", "none", "--runs", "1", "--json",
                            w.scratch("res") / "res.png"), True, "")),
        *[Case("7 tracebacks", f"path name over 255 bytes: {what}", make)
          for what, make in (
              ("run --out", lambda: (sdopt("run", w.art, "--prompt", "x", "--out", w.root / f"{long_name}.png"),
                                     True, "")),
              ("the artifact", lambda: (sdopt("run", w.root / long_name, "--prompt", "x", "--out", out("l")),
                                        True, "")),
              ("compress --out", lambda: (sdopt("compress", "--out", w.root / long_name, env=w.env), True, "")),
              ("--lora", lambda: (sdopt("compress", "--lora", w.root / f"{long_name}.safetensors", "--out",
                                        w.scratch("ll") / "a", env=w.env), True, "")),
              ("--recipe", lambda: (sdopt("compress", "--recipe", w.root / f"{long_name}.yaml", "--out",
                                          w.scratch("lr") / "a", env=w.env), True, "")),
              ("bench --json", lambda: (sdopt("bench", w.art, "--peers", "none", "--json",
                                              w.root / f"{long_name}.json"), True, "")))],
        Case("7 tracebacks", "--threads 2147483648",
             lambda: (sdopt("run", w.art, "--prompt", "x", "--threads", "2147483648", "--out", out("t")), True, "")),
        Case("7 tracebacks", "bench --vae-tile -8",
             lambda: (sdopt("bench", w.art, "--peers", "none", "--vae-tile", "-8"), True, "")),
        Case("7 tracebacks", "bench --vae-tile 7",
             lambda: (sdopt("bench", w.art, "--peers", "none", "--vae-tile", "7"), True, "")),
        Case("7 tracebacks", "bench --backends ,",
             lambda: (sdopt("bench", w.art, "--peers", "none", "--backends", ","), True, "")),
        Case("7 tracebacks", "deeply nested --set value",
             lambda: (sdopt("compress", "--recipe", "int8", "--set", "quantize.skip=" + "[" * 5000 + "]" * 5000,
                            "--out", w.scratch("nest") / "a", env=w.env), True, "")),
        Case("7 tracebacks", "full disk during compress", lambda: _full_disk(w, "compress")),
        Case("7 tracebacks", "full disk during run", lambda: _full_disk(w, "run")),
        Case("7 tracebacks", "full disk during build", lambda: _full_disk(w, "build")),
        Case("7 tracebacks", "read-only artifact folder during build", lambda: _read_only_build(w)),
        Case("7 tracebacks", "dangling symlink appearing at --out during compress", lambda: _symlink_race(w)),
        Case("8 hangs", "--threads 2000",
             lambda: (sdopt("run", w.art, "--prompt", "x", "--threads", "2000", "--out", out("t2")), True, "")),
        Case("8 hangs", "--threads 100000",
             lambda: (sdopt("run", w.art, "--prompt", "x", "--threads", "100000", "--out", out("t3")), True, "")),
        Case("8 hangs", "--image naming a FIFO",
             lambda: (sdopt("run", w.art, "--prompt", "x", "--image", w.root / "fifo.png", "--out", out("f")),
                      True, "")),
        Case("8 hangs", "--mask naming a FIFO",
             lambda: (sdopt("run", w.art, "--prompt", "x", "--image", w.root / "rgb.png", "--mask",
                            w.root / "fifo-mask.png", "--out", out("fm")), True, "")),
        Case("8 hangs", "--lora naming a FIFO", lambda: _lora_fifo(w)),
        Case("9 unclear", "LoRA of another architecture",
             lambda: _one_line_mentions(sdopt("compress", "--lora", w.root / "other-model.safetensors", "--out",
                                              w.scratch("oa") / "a", env=w.env), "made for another model")),
        Case("9 unclear", "--lora naming a folder",
             lambda: _one_line_mentions(sdopt("compress", "--lora", w.root, "--out", w.scratch("lf") / "a",
                                              env=w.env), "a folder")),
        Case("9 unclear", "2048x2048 within the documented size limits",
             lambda: _one_line_mentions(sdopt("run", w.art, "--prompt", "x", "--height", "2048", "--width", "2048",
                                              "--out", out("2k")), "GiB")),
        Case("9 unclear", "recipe int8+int8",
             lambda: _one_line_mentions(sdopt("compress", "--recipe", "int8+int8", "--out", w.scratch("ii") / "a",
                                              env=w.env), "twice")),
        Case("9 unclear", "run --out ART/unet/x.png", lambda: _into_artifact(w)),
    ]


def _one_line_mentions(outcome: Outcome, words: str):
    return outcome, words in outcome.err, f"says '{words}'"


def _lookalikes(w: Work, command: str):
    folder = w.scratch(f"lookalike-{command}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    name = "pic.png" if command == "run" else "art"
    (folder / f".{name}.tmp-{dead.pid}-mine").write_text("n")
    (folder / f".{name}.old-{dead.pid}-x" / "content").mkdir(parents=True)
    (folder / f".{name}.old-{dead.pid}-x" / "content" / "thesis.txt").write_text("p")
    before = snapshot(folder)
    outcome = sdopt("run", w.art, "--prompt", "x", "--out", folder / name) if command == "run" else \
        sdopt("compress", "--model", "arch:tiny", "--out", folder / name, env=w.env)
    after = {k: v for k, v in snapshot(folder).items() if k in before}
    return outcome, after == before, "every look-alike file kept"


def _eval_in_background(w: Work, folder: Path):
    return subprocess.Popen([*SDOPT, "eval", str(folder), "--low-memory", "--seeds", "1", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **w.env},
                            start_new_session=True)


def _finish(proc, start: float) -> Outcome:
    try:
        _, err = proc.communicate(timeout=max(1.0, LIMIT_S - (time.perf_counter() - start)))
        return Outcome(proc.returncode, err.decode(errors="replace"), time.perf_counter() - start)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return Outcome(None, err.decode(errors="replace"), time.perf_counter() - start, timed_out=True)


def _wait_for(proc, text: bytes, seen: bytearray) -> None:
    while text not in seen and proc.poll() is None:
        seen += os.read(proc.stderr.fileno(), 4096)


def _swap_during_eval(w: Work):
    folder = w.copy("swap")
    start, seen = time.perf_counter(), bytearray()
    proc = _eval_in_background(w, folder)
    _wait_for(proc, b"generating: fp32 artifact:   3%", seen)
    shutil.copyfile(w.batched / "unet" / "model.onnx", folder / "unet" / "model.onnx")  # valid, other bytes
    outcome = _finish(proc, start)
    outcome.err = seen.decode(errors="replace") + outcome.err
    return outcome, "is corrupt" in outcome.err, "the swapped graph is refused at its next load"


def _replace_during_eval(w: Work):
    folder = w.copy("replace")
    seen = bytearray()
    proc = _eval_in_background(w, folder)
    _wait_for(proc, b"generating: fp32 artifact:   3%", seen)
    done = sdopt("compress", "--attention", "batched", "--out", folder, env=w.env, limit=120)
    replaced = time.perf_counter()  # the eval's own time counts from here
    outcome = _finish(proc, replaced)
    outcome.err = seen.decode(errors="replace") + outcome.err
    return outcome, done.code == 0, (f"the replacing compress succeeded ({done.seconds:.0f} s); the eval refused "
                                     f"the new files (seconds: after the replacement)")


def _swapped_before_run(w: Work):
    folder = w.copy("swapped")
    shutil.copyfile(w.batched / "unet" / "model.onnx", folder / "unet" / "model.onnx")
    outcome = sdopt("run", folder, "--prompt", "x", "--out", w.scratch("sw") / "o.png")
    return outcome, "is corrupt" in outcome.err, "refused as corrupt"


def _doctored_spec(w: Work, command: str = "eval"):
    from sdopt.reference.families import FAMILIES

    folder = w.copy(f"spec-{command}")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["source"]["spec"] = str(FAMILIES["tiny-shapes"].model_dir)  # a diffusers folder elsewhere on disk
    (folder / "manifest.json").write_text(json.dumps(manifest))
    cache = w.scratch(f"cache-{command}")
    outcome = sdopt(command, folder, *(["--peers", "ort-fp32", "--runs", "1"] if command == "bench" else []),
                    env={"SDOPT_CACHE": str(cache)})
    return outcome, not any(cache.iterdir()), "nothing exported into SDOPT_CACHE"


def _sixteen_bit(w: Work):
    from sdopt.contract.image_files import read_image

    out = w.scratch("sixteen") / "o.png"
    outcome = sdopt("run", w.art, "--prompt", "x", "--image", w.root / "gray16.png", "--strength", "0.5",
                    "--steps", "4", "--out", out)
    mean = float(read_image(w.root / "gray16.png", "x").mean())
    return outcome, abs(mean - 40000 / 257) < 1 and out.is_file(), f"read as mean {mean:.1f} (40000/257 = 155.6)"


def _exif(w: Work):
    from sdopt.contract.image_files import read_image

    out = w.scratch("exif") / "o.png"
    outcome = sdopt("run", w.art, "--prompt", "x", "--image", w.root / "exif.jpg", "--strength", "0.5", "--steps",
                    "4", "--out", out)
    shape = read_image(w.root / "exif.jpg", "x").shape
    from PIL import Image

    written = Image.open(out).size if out.is_file() else None
    return outcome, shape[:2] == (32, 48) and written == (48, 32), f"read as {shape[1]}x{shape[0]}, generated {written}"


def _huge(w: Work):
    outcome = sdopt("run", w.art, "--prompt", "x", "--image", w.root / "huge.png", "--out", w.scratch("h") / "o.png")
    return outcome, outcome.seconds < 10 and "DecompressionBomb" not in outcome.err, "refused before decoding"


def _full_disk(w: Work, command: str):
    if not can_mount():
        return None, True, "skipped: needs root to mount a small tmpfs"
    mount = w.root / "scratch" / f"full-{command}"
    shutil.rmtree(mount, ignore_errors=True)
    size = {"compress": "2m", "run": "1m", "build": None}[command]
    if command == "build":
        size = f"{sum(p.stat().st_size for p in w.art.rglob('*') if p.is_file()) // 1024 + 512}k"
    with tmpfs(mount, size):
        if command == "compress":
            outcome = sdopt("compress", "--out", mount / "art", env=w.env)
        elif command == "run":
            with open(mount / "filler", "wb") as f:
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 65536)
            outcome = sdopt("run", w.art, "--prompt", "x", "--steps", "2", "--out", mount / "o.png")
        else:
            shutil.copytree(w.art, mount / "art")
            outcome = sdopt("build", mount / "art", "--format", "openvino")
        leftovers = [p.name for p in mount.iterdir() if p.name not in ("filler", "art")]
        if command == "build":
            leftovers += [p.name for p in (mount / "art").iterdir() if p.name.startswith(".")]
    return outcome, not leftovers, f"no leftovers ({leftovers or 'none'})"


def _read_only_build(w: Work):
    if not can_mount():
        return None, True, "skipped: needs root for a read-only bind mount"
    folder = w.copy("readonly")
    view = w.root / "scratch" / "readonly-view"
    view.mkdir(exist_ok=True)
    subprocess.run(["mount", "--bind", str(folder), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        outcome = sdopt("build", view, "--format", "openvino")
    finally:
        subprocess.run(["umount", "-l", str(view)])
    return outcome, True, ""


def _symlink_race(w: Work):
    folder = w.scratch("symlink")
    out = folder / "art"
    start, seen = time.perf_counter(), bytearray()
    proc = subprocess.Popen([*SDOPT, "compress", "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, **w.env}, start_new_session=True)
    _wait_for(proc, b"exporting ONNX", seen)
    os.symlink(folder / "nowhere", out)
    outcome = _finish(proc, start)
    outcome.err = seen.decode(errors="replace") + outcome.err
    return outcome, out.is_symlink() and not (folder / "nowhere").exists(), "the link and its target untouched"


def _lora_fifo(w: Work):
    fifo = w.root / "fifo.safetensors"
    with contextlib.suppress(FileExistsError):
        os.mkfifo(fifo)
    return sdopt("compress", "--lora", fifo, "--out", w.scratch("lfifo") / "a", env=w.env), True, ""


def _into_artifact(w: Work):
    folder = w.copy("into")
    before = snapshot(folder)
    outcome = sdopt("run", folder, "--prompt", "x", "--out", folder / "unet" / "x.png")
    return outcome, snapshot(folder) == before, "the artifact unchanged"


# -------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sdopt-reliability-cases")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "reliability_cases.json")
    parser.add_argument("--only", help="run the classes whose name contains this text")
    args = parser.parse_args()
    work = Work(args.work)
    print(f"preparing artifacts and inputs in {work.root}", file=sys.stderr)
    work.prepare()
    results = []
    for case in cases(work):
        if args.only and args.only not in case.klass:
            continue
        outcome, extra, note = case.run()
        if outcome is None:
            row = {"class": case.klass, "case": case.name, "skipped": note}
        else:
            right = outcome.clean_error if case.expect == "error" else (outcome.code == 0
                                                                      and "Traceback" not in outcome.err)
            last = (outcome.err.strip().splitlines() or [""])[-1]
            row = {"class": case.klass, "case": case.name, "expect": case.expect, "exit_code": outcome.code,
                   "seconds": round(outcome.seconds, 1), "timed_out": outcome.timed_out,
                   "passed": bool(right and extra and outcome.seconds < LIMIT_S and not outcome.timed_out),
                   "check": note, "last_line": last[:400]}
        results.append(row)
        status = "skip" if "skipped" in row else ("pass" if row["passed"] else "FAIL")
        print(f"{status:4}  {case.klass:32}  {case.name[:60]:60}  exit {row.get('exit_code')}  "
              f"{row.get('seconds', '-')} s  {row.get('last_line', row.get('skipped', ''))[:160]}", file=sys.stderr)
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cases": results, "limit_s": LIMIT_S}, indent=2) + "\n")
    if any(not r.get("passed", True) for r in results):
        sys.exit(1)


def table(results: list[dict]) -> str:
    lines = ["| class | cases tried | refused cleanly or right | exit codes |", "|---|---|---|---|"]
    for klass in dict.fromkeys(r["class"] for r in results):
        rows = [r for r in results if r["class"] == klass and "skipped" not in r]
        codes = sorted({r["exit_code"] for r in rows}, key=str)
        skipped = sum(1 for r in results if r["class"] == klass and "skipped" in r)
        lines.append(f"| {klass} | {len(rows)}{f' (+{skipped} skipped)' if skipped else ''} | "
                     f"{sum(r['passed'] for r in rows)} | {', '.join(map(str, codes))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
