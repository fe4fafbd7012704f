"""The artifact folder and its manifest: the only contract between compress, export and runtime.

Torch-free on purpose: the runtime reads artifacts with this module.

Layout (diffusers-style):
    model_index.json  manifest.json
    tokenizer/tokenizer.json  [tokenizer_2/tokenizer.json]
    scheduler/scheduler_config.json
    text_encoder/model.onnx  [text_encoder_2/model.onnx]
    unet/model.onnx [+ model.onnx_data]
    vae_decoder/model.onnx
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from . import __version__
from .errors import SdoptError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_atomically(path: Path, write) -> None:
    """`write(tmp)` writes a temporary file beside `path`, renamed into place only when it succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable_destination(out: Path) -> None:
    """Fail before any work if `out` cannot be created, or would clobber something that is not ours."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SdoptError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise SdoptError(f"--out {out}: folder exists, is not empty and is not an sdopt artifact")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent)
        os.rmdir(probe)
    except OSError as err:
        raise SdoptError(f"--out {out}: cannot write there ({err.strerror or err})") from err


class ArtifactWriter:
    """Stage an artifact in a hidden temporary folder beside `out`; rename it into place on success.

    An interrupted or failed run leaves no artifact behind (and an older artifact at `out` intact).
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        check_writable_destination(self.out)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.resolve().parent))
        self.components: dict[str, dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def path(self, relative: str) -> Path:
        p = self.tmp / relative
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_json(self, relative: str, data: dict) -> None:
        self.path(relative).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def add_component(self, name: str, files: list[str], inputs: list[dict], outputs: list[dict],
                      **details) -> None:
        self.components[name] = {"files": files, "inputs": inputs, "outputs": outputs, **details}

    def commit(self, manifest: dict) -> Path:
        for name, comp in self.components.items():
            comp["files"] = {f: {"sha256": sha256_file(self.tmp / name / f),
                                 "bytes": (self.tmp / name / f).stat().st_size} for f in comp["files"]}
        extra_files = {}
        for rel in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
                    "tokenizer_2/tokenizer.json"):
            if (self.tmp / rel).is_file():
                extra_files[rel] = sha256_file(self.tmp / rel)
        manifest = {"schema_version": SCHEMA_VERSION, "sdopt_version": __version__, **manifest,
                    "components": self.components, "files": extra_files}
        self.write_json(MANIFEST, manifest)
        os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp made it private
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.rename(self.out, old)
        os.rename(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out


def record_build(folder: Path, name: str, staging: Path, record: dict) -> dict:
    """Move a backend build (staged in a temporary folder inside the artifact) to `folder/name` and list
    its files in the manifest under builds[name]; an earlier build of that name is replaced."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    target = folder / name
    record = {**record, "files": {rel: {"sha256": sha256_file(staging / Path(rel).relative_to(name)),
                                        "bytes": (staging / Path(rel).relative_to(name)).stat().st_size}
                                  for rel in record["files"]}}
    old = folder / f".{name}.old-{os.getpid()}"
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp made it private
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    manifest.setdefault("builds", {})[name] = record
    write_atomically(folder / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2,
                                                                                    sort_keys=True) + "\n"))
    shutil.rmtree(old, ignore_errors=True)
    return record


def load_manifest(folder: Path, verify: bool = True) -> dict:
    """Read and check an artifact: every file present, every sha256 as recorded."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise SdoptError(f"'{folder}' is not an sdopt artifact (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SdoptError(f"'{path}': unreadable manifest ({err})") from err
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise SdoptError(f"'{path}': schema version {manifest.get('schema_version')!r}, "
                         f"this sdopt reads {SCHEMA_VERSION}")
    expected = dict(manifest.get("files", {}))
    for name, comp in manifest.get("components", {}).items():
        for fname, meta in comp.get("files", {}).items():
            expected[f"{name}/{fname}"] = meta["sha256"]
    for build in manifest.get("builds", {}).values():
        expected.update({rel: meta["sha256"] for rel, meta in build["files"].items()})
    for rel, digest in expected.items():
        file = folder / rel
        if not file.is_file():
            raise SdoptError(f"artifact '{folder}': missing file {rel}")
        if verify and sha256_file(file) != digest:
            raise SdoptError(f"artifact '{folder}': {rel} is corrupt (sha256 does not match the manifest)")
    return manifest
