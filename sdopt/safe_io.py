"""Reading and writing the user's files safely: strict text reads, output paths checked before any work,
atomic writes, staging folders that a later run can recognise and remove when their process died.

Torch-free: the runtime writes images with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from . import interrupts
from .errors import SdoptError
from .limits import MAX_TEXT_FILE_BYTES, check_text

STAGING_MARKER = ".sdopt-staging"  # inside a staging folder: {"pid", "host"} of the process writing it


def read_text(path: Path, what: str, max_bytes: int = MAX_TEXT_FILE_BYTES) -> str:
    """A UTF-8 text file given by the user, or one clear error."""
    path = Path(path)
    try:
        if not path.is_file():
            raise SdoptError(f"{what} {path}: no such file" if not path.exists() else f"{what} {path}: not a file")
        if path.stat().st_size > max_bytes:
            raise SdoptError(f"{what} {path}: larger than {max_bytes >> 20} MiB")
        data = path.read_bytes()
    except OSError as err:
        raise SdoptError(f"{what} {path}: cannot read it ({err.strerror or err})") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SdoptError(f"{what} {path}: not UTF-8 text (byte {err.start})") from None


def nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: Path, flag: str, suffix: str | None = None) -> Path:
    """Before any work: `path` can be written (its folder exists and is writable; it is not a folder)."""
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise SdoptError(f"{flag} {path}: must be a {suffix} file")
    parent = Path(os.path.abspath(path)).parent
    if not parent.is_dir():
        raise SdoptError(f"{flag} {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise SdoptError(f"{flag} {path}: is a folder")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise SdoptError(f"{flag} {path}: exists and is not a regular file")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SdoptError(f"{flag} {path}: not writable")
    return path


def _temp_pattern(name: str, kind: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.{kind}-(\d+)-[A-Za-z0-9_]+")


def write_atomically(path: Path, write) -> None:
    """`write(tmp)` writes a temporary file beside `path`, renamed into place only when it succeeds."""
    path = Path(path)
    remove_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp made it private
        interrupts.raise_if_interrupted()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_folder(parent: Path, name: str) -> Path:
    """A hidden folder `.NAME.partial-PID-XXXX` in `parent`, marked as ours until it is committed."""
    remove_stale(parent, name)
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=parent))
    (folder / STAGING_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    return folder


def commit_folder(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`; an existing `target` (the caller has checked that it may be replaced)
    is moved aside first and removed after."""
    interrupts.raise_if_interrupted()
    (staging / STAGING_MARKER).unlink(missing_ok=True)
    os.chmod(staging, 0o777 & ~umask())  # mkdtemp made it private
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
        os.rename(target, old / "content")
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale(parent: Path, name: str) -> list[Path]:
    """Remove what killed runs left beside `parent/name`: staging folders carrying our marker, aside-moved
    old copies and temporary files, each named with the pid of a process that no longer runs here."""
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    host = socket.gethostname()
    for kind in ("partial", "old", "tmp"):
        pattern = _temp_pattern(name, kind)
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or _alive(int(match.group(1))) or entry.is_symlink():
                continue
            if kind == "tmp" and entry.is_file():
                entry.unlink(missing_ok=True)
            elif kind == "partial" and entry.is_dir() and _marker_host(entry) == host:
                shutil.rmtree(entry, ignore_errors=True)
            elif kind == "old" and entry.is_dir() and {p.name for p in entry.iterdir()} <= {"content"}:
                shutil.rmtree(entry, ignore_errors=True)
            else:
                continue
            removed.append(entry)
    return removed


def _marker_host(folder: Path) -> str | None:
    try:
        return json.loads((folder / STAGING_MARKER).read_text()).get("host")
    except (OSError, ValueError, AttributeError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def make_parents(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (innermost last), so a failure can remove them again."""
    created = []
    folder = Path(os.path.abspath(folder))
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(path)
    return created


def remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            path.rmdir()  # only while empty
        except OSError:
            break


def read_prompts(path: Path, flag: str) -> list[str]:
    """One prompt per non-empty line of a UTF-8 text file."""
    prompts = [line.strip() for line in read_text(path, flag).splitlines() if line.strip()]
    if not prompts:
        raise SdoptError(f"{flag} {path}: no prompts in the file")
    for i, prompt in enumerate(prompts):
        check_text(prompt, f"{flag} {path}, prompt {i + 1}")
    return prompts
