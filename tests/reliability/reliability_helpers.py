"""Helpers of the reliability suite: bad input of every class ends in one line on stderr and exit code 2,
with nothing written. Artifacts are edited the way someone else's artifact could be: consistently (files
re-hashed into the manifest), so that only sdopt's own checks stand between them and the engines."""

import hashlib
import json

from sdopt.app.cli import main


def fails(capsys, argv, code=2) -> str:
    """Run the CLI; it must exit with `code` and end in exactly one `sdopt CMD: error:` line, no traceback."""
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    assert lines[0].startswith("sdopt "), err
    return lines[0]


def manifest_of(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def write_manifest(folder, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def rehash(folder, relative: str) -> None:
    """Record a file's current size and sha256 in the manifest, wherever the manifest lists it."""
    manifest = manifest_of(folder)
    data = (folder / relative).read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    component, _, name = relative.partition("/")
    if component in manifest["components"] and name in manifest["components"][component]["files"]:
        manifest["components"][component]["files"][name] = entry
    elif relative in manifest["files"]:
        manifest["files"][relative] = entry
    else:
        for build in manifest.get("builds", {}).values():
            if relative in build["files"]:
                build["files"][relative] = entry
    write_manifest(folder, manifest)


def tree(folder) -> dict:
    """Every path under `folder` with its size (folders: None), to compare before and after."""
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}
