"""Reading and writing the user's files safely: strict text reads, output paths checked before any work,
atomic writes, staging folders that a later run can recognise and remove when their process died.

Torch-free: the runtime writes images with it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path

from sdopt.contract import interrupts
from sdopt.contract.errors import SdoptError
from sdopt.contract.limits import MAX_TEXT_FILE_BYTES, check_text

STAGING_MARKER = ".sdopt-staging"  # in every folder sdopt makes beside an output: {"pid", "host", "kind", "name"}


def open_regular(path: Path, what: str):
    """A user's file opened for reading (binary), or one clear error: it must be a regular file. A FIFO, a device
    or a folder is refused without blocking (opened non-blocking, then checked on the open descriptor)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise SdoptError(f"{what} {path}: no such file") from None
        raise SdoptError(f"{what} {path}: cannot read it ({err.strerror or err})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SdoptError(f"{what} {path}: " + ("a folder, not a file" if stat.S_ISDIR(mode)
                                                   else "not a regular file (a FIFO, device or socket)"))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: Path, what: str, max_bytes: int) -> bytes:
    """A user's regular file, whole, if it holds at most `max_bytes`."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise SdoptError(f"{what} {path}: larger than {_size_text(max_bytes)}")
        try:
            data = f.read(max_bytes + 1)
        except OSError as err:
            raise SdoptError(f"{what} {path}: cannot read it ({err.strerror or err})") from None
    if len(data) > max_bytes:  # grew while being read
        raise SdoptError(f"{what} {path}: larger than {_size_text(max_bytes)}")
    return data


def _size_text(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size:,} bytes"


def read_text(path: Path, what: str, max_bytes: int = MAX_TEXT_FILE_BYTES) -> str:
    """A UTF-8 text file given by the user, or one clear error."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SdoptError(f"{what} {path}: not UTF-8 text (byte {err.start})") from None


def same_file(a: Path, b: Path) -> bool:
    """`a` and `b` name one file (the same path once resolved, or the same existing file)."""
    a, b = Path(a), Path(b)
    if Path(os.path.realpath(a)) == Path(os.path.realpath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outside(path: Path, folders, flag: str) -> None:
    """Before any work: an output file does not lie inside one of `folders` (artifacts are never written by
    run, eval or bench)."""
    where = Path(os.path.realpath(Path(path).parent))
    for folder in folders:
        if folder is not None and (Path(folder) / "manifest.json").is_file() \
                and where.is_relative_to(os.path.realpath(folder)):
            raise SdoptError(f"{flag} {path}: inside the artifact {folder}; write it elsewhere")


def nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: Path, flag: str, suffix: str | None = None) -> Path:
    """Before any work: `path` can be written (its folder exists and is writable; it is not a folder)."""
    try:
        return _check_output_file(Path(path), flag, suffix)
    except OSError as err:  # a name too long, a loop of links
        raise SdoptError(f"{flag} {path}: {err.strerror or type(err).__name__}") from None


def _check_output_file(path: Path, flag: str, suffix: str | None) -> Path:
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


def marked_folder(parent: Path, name: str, kind: str) -> Path:
    """A new hidden folder `.NAME.KIND-PID-XXXX` in `parent` carrying sdopt's marker: the only kind of thing
    that a later run's clean-up (`remove_stale`) may remove."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{name}.{kind}-{os.getpid()}-", dir=parent))
    except OSError as err:
        raise SdoptError(f"cannot write in {parent}: {err.strerror or type(err).__name__}") from None
    try:
        (folder / STAGING_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                         "kind": kind, "name": name}))
    except BaseException as err:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(err, OSError):
            raise SdoptError(f"cannot write in {parent}: {err.strerror or type(err).__name__}") from None
        raise
    return folder


def write_atomically(path: Path, write) -> None:
    """`write(tmp)` writes a file in a marked temporary folder beside `path`; it is renamed into place only
    when the write succeeds."""
    path = Path(path)
    remove_stale(path.parent, path.name)
    folder = marked_folder(path.parent, path.name, "tmp")
    tmp = folder / path.name
    try:
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~umask())
        interrupts.raise_if_interrupted()
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a quota: named by the file the user asked for
        raise SdoptError(f"cannot write {path}: {err.strerror or type(err).__name__}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # our own folder, made above


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_folder(parent: Path, name: str) -> Path:
    """A hidden folder `.NAME.partial-PID-XXXX` in `parent`, marked as ours until it is committed."""
    remove_stale(parent, name)
    return marked_folder(Path(parent), name, "partial")


def commit_folder(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`; an existing `target` (the caller has checked that it may be replaced)
    is moved aside into a marked folder first and removed after."""
    interrupts.raise_if_interrupted()
    (staging / STAGING_MARKER).unlink(missing_ok=True)
    os.chmod(staging, 0o777 & ~umask())  # mkdtemp made it private
    old = None
    if target.exists():
        old = marked_folder(target.parent, target.name, "old")
        os.rename(target, old / "content")
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale(parent: Path, name: str) -> list[Path]:
    """Remove what killed runs left beside `parent/name`: folders carrying sdopt's marker for this name and
    kind, written on this host by a process that no longer runs. Nothing without the marker is touched, whatever
    its name."""
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
            if match is None or entry.is_symlink() or not entry.is_dir() or _alive(int(match.group(1))):
                continue
            marker = _marker(entry)
            if marker.get("host") != host or marker.get("pid") != int(match.group(1)) \
                    or marker.get("kind", kind) != kind or marker.get("name", name) != name:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _marker(folder: Path) -> dict:
    try:
        marker = json.loads((folder / STAGING_MARKER).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return marker if isinstance(marker, dict) else {}


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
