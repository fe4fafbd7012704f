"""Where sdopt keeps what it derives from a model (calibration records, references, students, bench peers)
and the keys that name it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """$SDOPT_CACHE (default ~/.cache/sdopt): calibration records, references, students, bench peers."""
    return Path(os.environ.get("SDOPT_CACHE", Path.home() / ".cache" / "sdopt"))


def source_key(spec: str, version: str, kind: str = "", folder: Path | None = None) -> str:
    """A cache key for what is made from a model source by one sdopt version. A folder source (`spec` itself, or
    `folder` for a name that stands for one, as a reference model's) counts by its path and by its files' names,
    sizes and modification times: a folder retrained or edited in place gets a new key."""
    folder = folder if folder is not None else (Path(spec) if Path(spec).is_dir() else None)
    resolved = folder.resolve() if folder is not None else Path(spec).resolve() if Path(spec).exists() else ""
    stamp = files_stamp(folder) if folder is not None else ""
    return hashlib.sha256(f"{kind + '|' if kind else ''}{spec}|{resolved}|{version}{stamp}".encode()).hexdigest()[:16]


def files_stamp(folder: Path) -> str:
    """sha256 of the names, sizes and modification times of every file under `folder` (cheap at any size)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return "|" + digest.hexdigest()


def weights_key(modules, settings: dict) -> str:
    """A cache key: 24 hex digits of the sha256 of torch modules' weights (names and values) and the settings (as
    JSON), for anything computed from these weights with these settings."""
    import json

    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def first_non_finite(module) -> str | None:
    """The name of a torch module's first parameter or floating buffer that holds NaN or Inf, or None."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not bool(tensor.detach().isfinite().all()):
            return name
    return None
