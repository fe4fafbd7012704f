"""The artifact folder and its manifest: the only contract between compress, export and runtime.

Torch-free on purpose: the runtime reads artifacts with this module.

Layout (diffusers-style):
    model_index.json  manifest.json
    tokenizer/tokenizer.json  [tokenizer_2/tokenizer.json]
    scheduler/scheduler_config.json
    text_encoder/model.onnx + config.json  [text_encoder_2/...]
    unet/model.onnx [+ model.onnx_data] + config.json
    vae_decoder/model.onnx + config.json
    [<component>/openvino_model.xml + .bin]  [tensorrt/<component>.plan]

(schema 2 kept OpenVINO builds in openvino/<component>/model.xml; they are still read.)

`open_artifact` is the one way in: the manifest is size-capped, strict JSON and schema-checked
(`sdopt.contract.manifest`) before any other file is opened; every path it names is relative and inside the
folder (symlinks included); every file a backend opens is listed with its size and sha256, and no file
that is not listed lies where a backend would find it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sdopt.contract import interrupts
from sdopt.contract import manifest as rules
from sdopt.contract.errors import SdoptError
from sdopt.contract.limits import MAX_MANIFEST_BYTES
from sdopt.contract.safe_io import (
    commit_folder,
    make_parents,
    nearest_existing,
    open_regular,
    read_bytes,
    remove_created,
    remove_stale,
    staging_folder,
    write_atomically,
)
from sdopt.contract.schema import json_safe, parse_json
from sdopt.contract.version import __version__

MANIFEST = "manifest.json"
SCRATCH = "scratch"  # builds stage rewritten graphs in `.scratch.partial-*` folders inside the artifact
SCHEMA_VERSION = rules.SCHEMA_VERSION


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path, "file") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    folder: Path  # as given
    manifest: dict  # validated

    def path(self, relative: str) -> Path:
        """A file the manifest lists (checked inside the folder when the artifact was opened)."""
        if relative not in rules.listed_files(self.manifest):
            raise SdoptError(f"artifact '{self.folder}': {relative} is not listed in its manifest")
        return self.folder / relative

    def verify(self, *relative: str) -> None:
        """Check listed files against their sha256 now: called as a backend is about to open them, so that
        what runs is what the manifest lists even when the folder changed since it was opened."""
        for rel in relative:
            interrupts.raise_if_interrupted()
            if sha256_file(self.path(rel)) != rules.listed_files(self.manifest)[rel]["sha256"]:
                raise SdoptError(f"artifact '{self.folder}': {rel} is corrupt (sha256 does not match "
                                 f"the manifest)")

    def read_verified(self, relative: str) -> bytes:
        """A listed file's bytes, checked against its size and sha256 as they are read (what is checked is what
        is used)."""
        entry = rules.listed_files(self.manifest).get(relative)
        data = read_bytes(self.path(relative), f"artifact '{self.folder}':", entry["bytes"]) if entry else None
        if data is None or len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SdoptError(f"artifact '{self.folder}': {relative} is corrupt (sha256 does not match "
                             f"the manifest)")
        return data

    @property
    def components(self) -> dict:
        return self.manifest["components"]

    @property
    def pipeline(self) -> dict:
        return self.manifest["pipeline"]

    def build(self, name: str) -> dict | None:
        return self.manifest.get("builds", {}).get(name)


def read_manifest(folder: Path) -> dict:
    """Parse and validate `folder/manifest.json`; no other file is looked at."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise SdoptError(f"'{folder}' is not a folder" if folder.exists() else f"'{folder}' does not exist")
    if path.is_symlink() or not path.is_file():
        raise SdoptError(f"'{folder}' is not an sdopt artifact (no {MANIFEST})")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise SdoptError(f"'{path}': cannot read it ({err.strerror or err})") from err
    if size > MAX_MANIFEST_BYTES:
        raise SdoptError(f"'{path}': {size:,} bytes, over the {MAX_MANIFEST_BYTES >> 20} MiB a manifest may have")
    data = read_bytes(path, "manifest", MAX_MANIFEST_BYTES)
    try:
        manifest = parse_json(data)
    except ValueError as err:
        raise SdoptError(f"'{path}': {err}") from None
    return rules.validate(manifest, f"'{path}'")


def open_artifact(folder: Path, verify: bool = True) -> Artifact:
    """Read and check an artifact: schema, paths, sizes, no unlisted files where backends look, and with
    `verify` every file's sha256."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    root = folder.resolve()
    files = rules.listed_files(manifest)
    for rel, entry in files.items():
        file = folder / rel
        if not _inside(file, root):
            raise SdoptError(f"artifact '{folder}': {rel} resolves outside the artifact folder")
        if not file.is_file():
            raise SdoptError(f"artifact '{folder}': missing file {rel}")
        if file.stat().st_size != entry["bytes"]:
            raise SdoptError(f"artifact '{folder}': {rel} is corrupt (size differs from the manifest)")
    for sub in rules.scanned_folders(manifest):
        if (folder / sub).exists() and not _inside(folder / sub, root):
            raise SdoptError(f"artifact '{folder}': folder {sub} resolves outside the artifact folder")
        for path in sorted((folder / sub).rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if (path.is_file() or path.is_symlink()) and rel not in files:
                raise SdoptError(f"artifact '{folder}': {rel} is not listed in the manifest (refusing to load "
                                 f"files that were not verified)")
    if verify:
        for rel, entry in files.items():
            interrupts.raise_if_interrupted()
            if sha256_file(folder / rel) != entry["sha256"]:
                raise SdoptError(f"artifact '{folder}': {rel} is corrupt (sha256 does not match the manifest)")
    return Artifact(folder, manifest)


def load_manifest(folder: Path, verify: bool = True) -> dict:
    return open_artifact(folder, verify).manifest


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def check_writable_destination(out: Path) -> None:
    """Before any work: `out` can be created, or is an sdopt artifact that may be replaced whole."""
    out = Path(out)
    if out.is_symlink():
        raise SdoptError(f"--out {out}: is a symbolic link; give the folder itself")
    if out.exists() and not out.is_dir():
        raise SdoptError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        _check_replaceable(out)
    existing = nearest_existing(out.parent if not out.exists() else out)
    if not existing.is_dir():
        raise SdoptError(f"--out {out}: cannot create it ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SdoptError(f"--out {out}: cannot write there ({existing} is not writable)")


def _check_replaceable(out: Path) -> None:
    """Only a folder that is wholly an sdopt artifact is replaced: its manifest says so, and it holds
    nothing the manifest does not list (a user's own files are never deleted)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else None
    except (OSError, ValueError, RecursionError):
        manifest = None
    known = _own_files(manifest) if isinstance(manifest, dict) else None
    if known is None:
        raise SdoptError(f"--out {out}: folder exists, is not empty and is not an sdopt artifact; "
                         f"not replaced (choose another --out)")
    for name in (*rules.BUILDS, SCRATCH):  # what killed builds left inside it
        remove_stale(out, name)
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if (path.is_file() or path.is_symlink()) and rel not in known:
            raise SdoptError(f"--out {out}: holds {rel}, which is not part of the artifact; not replaced "
                             f"(move it away or choose another --out)")


def _own_files(manifest: dict) -> set[str] | None:
    """The files an sdopt manifest of any schema version lists, or None if it is not an sdopt manifest."""
    if not isinstance(manifest.get("sdopt_version"), str) or not isinstance(manifest.get("components"), dict):
        return None
    if manifest.get("schema_version") in rules.READABLE_VERSIONS and manifest.get("format") != rules.FORMAT:
        return None
    try:
        own = {MANIFEST, *manifest.get("files", {})}
        for name, component in manifest["components"].items():
            own.update(f"{name}/{f}" for f in component["files"])
            # what a killed graph-folder build may have left unlisted
            own.update(f"{name}/{f}" for files in rules.GRAPH_FOLDER_BUILDS.values() for f in files)
        for build_name, build in manifest.get("builds", {}).items():
            own.update(build["files"])
            if build_name == "tensorrt":  # schema 1 did not list the timing cache
                own.add("tensorrt/timing.cache")
    except (AttributeError, KeyError, TypeError):
        return None
    return {f for f in own if isinstance(f, str)}


class ArtifactWriter:
    """Stage an artifact in a hidden temporary folder beside `out`; rename it into place on success.

    An interrupted or failed run leaves no artifact behind (an older artifact at `out` intact, and no
    parent folder it created); a run killed outright leaves a staging folder the next run removes.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        check_writable_destination(self.out)
        self.created = make_parents(self.out.parent)
        try:
            self.tmp = staging_folder(self.out.parent, self.out.name)
        except BaseException:
            remove_created(self.created)
            raise
        self.components: dict[str, dict] = {}
        self.added: list[str] = []  # files besides the components and the pipeline's own

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            remove_created(self.created)
            if isinstance(exc, OSError):  # a full disk, a quota, a folder gone read-only: named by --out
                raise SdoptError(f"cannot write the artifact {self.out}: {exc.strerror or type(exc).__name__} "
                                 f"(nothing was written)") from None
        return False

    def path(self, relative: str) -> Path:
        p = self.tmp / relative
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_json(self, relative: str, data: dict, strict: bool = True) -> None:
        """`strict`: no NaN / Infinity (diffusers' own configs may hold -Infinity, which it reads back)."""
        self.path(relative).write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=not strict) + "\n")

    def write_file(self, relative: str, data: bytes) -> None:
        self.path(relative).write_bytes(data)
        self.added.append(relative)

    def add_component(self, name: str, files: list[str], inputs: list[dict], outputs: list[dict],
                      **details) -> None:
        self.components[name] = {"files": files, "inputs": inputs, "outputs": outputs, **details}

    def commit(self, manifest: dict) -> Path:
        for name, comp in self.components.items():
            comp["files"] = {f: _file_entry(self.tmp / name / f) for f in comp["files"]}
        extra_files = {}
        for rel in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
                    "tokenizer_2/tokenizer.json", *self.added):
            if (self.tmp / rel).is_file():
                extra_files[rel] = _file_entry(self.tmp / rel)
        manifest = json_safe({"schema_version": SCHEMA_VERSION, "format": rules.FORMAT, "sdopt_version": __version__,
                              **manifest, "components": self.components, "files": extra_files})
        rules.validate(manifest, "the manifest being written")  # what we write, we can read
        self.write_json(MANIFEST, manifest)
        if self.out.exists() or self.out.is_symlink():
            check_writable_destination(self.out)  # still ours to replace after the long work
        commit_folder(self.tmp, self.out)
        return self.out


def _file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


@contextlib.contextmanager
def writing_build(folder: Path):
    """Around a backend build: what the system refuses (a full disk, a folder made read-only) is one error naming
    the artifact; the caller's staging folder is removed by its own clean-up."""
    try:
        yield
    except OSError as err:
        raise SdoptError(f"cannot write the build into the artifact {folder}: {err.strerror or type(err).__name__} "
                         f"(the artifact is unchanged)") from None


def check_build_destination(folder: Path) -> None:
    """Before a build: the artifact folder can take the build's files."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SdoptError(f"artifact {folder}: not writable, so no build can be stored in it")


def record_build(artifact: Artifact, name: str, staging: Path, record: dict) -> dict:
    """Move a backend build (staged in `staging_folder(artifact.folder, name)`) into the artifact and list its
    files in the manifest under builds[name]; an earlier build of that name is replaced. Files are relative to
    the artifact: `name/...` (staged as `staging/...`), or for a graph-folder build `<graph>/<file>` (staged as
    `staging/<graph>/<file>`)."""
    folder = artifact.folder
    in_graph_folders = name in rules.GRAPH_FOLDER_BUILDS

    def staged(rel: str) -> Path:
        return staging / (rel if in_graph_folders else Path(rel).relative_to(name))
    record = {**record, "files": {rel: _file_entry(staged(rel)) for rel in record["files"]}}
    manifest = read_manifest(folder)
    manifest.setdefault("builds", {})[name] = record
    rules.validate(manifest, "the manifest being written")
    if in_graph_folders:
        drop_build(folder, name)
        for rel in record["files"]:
            os.replace(staged(rel), folder / rel)
    else:
        commit_folder(staging, folder / name)
    _write_manifest(folder, manifest)
    return record


def drop_build(folder: Path, name: str) -> None:
    """Remove the build `name` from an artifact: first from its manifest, then its files (those it listed, and
    what a killed build of that kind left in the graph folders); folders its files leave empty go too."""
    manifest = read_manifest(folder)
    old = manifest.get("builds", {}).pop(name, None)
    if old is not None:
        _write_manifest(folder, manifest)
    leftovers = [f"{graph}/{f}" for graph in manifest["components"] for f in rules.GRAPH_FOLDER_BUILDS.get(name, ())]
    listed = rules.listed_files(manifest)
    for rel in [*(old or {}).get("files", {}), *leftovers]:
        path = Path(folder) / rel
        if (path.is_file() or path.is_symlink()) and rel not in listed:
            path.unlink()
    build_folder = Path(folder) / name
    if build_folder.is_dir() and not build_folder.is_symlink():
        for sub in sorted((p for p in build_folder.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
            if not any(sub.iterdir()):
                sub.rmdir()
        if not any(build_folder.iterdir()):
            build_folder.rmdir()


def _write_manifest(folder: Path, manifest: dict) -> None:
    write_atomically(Path(folder) / MANIFEST, lambda tmp: Path(tmp).write_text(
        json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"))
