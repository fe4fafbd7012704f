"""The stage folders import one way (no cycle among compress/, calibration/, export/; the runtime none of
them), and no code outside the pass modules compares anything with a pass's name."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"compress": "compress", "calibration": "calibration", "export": "export", "runtime": "runtime",
           "sdopt": "core"}


def _modules():
    for folder, layer in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            package = ["sdopt"] if layer == "core" else ["sdopt", folder]
            package += list(path.relative_to(ROOT / folder).parent.parts)
            yield layer, path, package


def _imports(path: Path, package: list[str]):
    for node in ast.walk(ast.parse(path.read_text())):  # function-level (lazy) imports included
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            yield name
            if node.module is None or node.level:
                yield from (f"{name}.{alias.name}" for alias in node.names)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "sdopt":
        return None
    return {"compress": "compress", "calibration": "calibration", "export": "export",
            "runtime": "runtime"}.get(parts[1] if len(parts) > 1 else "", "core")


def _edges() -> set[tuple[str, str]]:
    edges = set()
    for layer, path, package in _modules():
        for module in _imports(path, package):
            target = _layer(module)
            if target is not None and target != layer:
                edges.add((layer, target))
    return edges


def test_no_import_cycle_among_stage_folders():
    edges = _edges()
    stages = ("compress", "calibration", "export")
    graph = {s: {b for a, b in edges if a == s and b in stages} for s in stages}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])

    assert not [s for s in stages if reaches(s, s)], sorted(edges)
    assert ("compress", "export") not in edges and ("export", "compress") not in edges
    assert not {("calibration", "compress"), ("calibration", "export")} & edges


def test_runtime_imports_no_stage_folder():
    assert not {("runtime", s) for s in ("compress", "calibration", "export")} & _edges()


def test_no_code_outside_the_pass_modules_branches_on_a_pass_name():
    from sdopt.passes import registry

    names = set(registry())
    found = []
    for layer, path, _ in _modules():
        if layer == "compress" or path.name == "passes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                found += [f"{path.relative_to(ROOT)}:{node.lineno}" for c in constants if c in names]
    assert found == [] and names >= {"quantize", "lora"}


@pytest.mark.parametrize("layer", FOLDERS.values())
def test_every_layer_is_walked(layer):
    assert any(m[0] == layer for m in _modules())


def test_no_import_cycle_inside_the_runtime():
    """Module by module, lazy imports included: strategies and guidance register themselves, nothing imports
    back."""
    folder = ROOT / "runtime"
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        name = ".".join(["sdopt", "runtime", *(parts[:-1] if parts[-1] == "__init__" else parts)])
        package = ["sdopt", "runtime", *path.relative_to(folder).parent.parts]
        modules[name] = {m for m in _imports(path, package)}
    graph = {name: {m for m in imported if m in modules and m != name} for name, imported in modules.items()}

    def cycle_from(start):
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
        return None

    assert [cycle_from(m) for m in graph if cycle_from(m)] == []
