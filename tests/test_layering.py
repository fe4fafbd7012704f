"""The layers import one way, lazy imports included:

    contract <- training <- reference <- backbones <- sources <- calibration <- compress, export <- recipes <- app
    <- the package face (sdopt/__init__.py)

and the runtime depends on the contract alone. No code outside the pass modules compares anything with a pass's
name."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"compress": "compress", "calibration": "calibration", "export": "export", "runtime": "runtime"}
CORE = ("contract", "training", "reference", "backbones", "sources", "recipes", "app")
# each layer with its rank: a module imports from its own layer and from lower ranks only
RANKS = {"contract": 0, "training": 1, "reference": 2, "backbones": 3, "sources": 4, "calibration": 5,
         "compress": 6, "export": 6, "recipes": 7, "app": 8, "face": 9}
# The package `sdopt.compress` is also the API's `sdopt.compress(...)`: its face hands the call to the
# application when called (compress/__init__.py), the one reference from a stage to the application.
ALLOWED_UPWARD = {("compress/__init__.py", "app")}
FOLDERS = {**STAGES, **{f"sdopt/{name}": name for name in CORE}, "sdopt": "face"}


def _modules():
    for folder, layer in FOLDERS.items():
        paths = [ROOT / "sdopt" / "__init__.py"] if layer == "face" else sorted((ROOT / folder).rglob("*.py"))
        for path in paths:
            package = ["sdopt"] + ([] if layer == "face" else
                                   [layer] if folder in STAGES else [])
            package += list(path.relative_to(ROOT / folder).parent.parts) if layer != "face" else []
            if layer in CORE:
                package = ["sdopt", layer, *path.relative_to(ROOT / folder).parent.parts]
            yield layer, path, package


def _imports(path: Path, package: list[str]):
    for node in ast.walk(ast.parse(path.read_text())):  # function-level (lazy) imports included
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)  # a module or a name in one


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "sdopt":
        return None
    if len(parts) == 1 or parts[1] in ("__version__", "SdoptError", "Pipeline", "evaluate", "bench"):
        return "face"
    if parts[1] in STAGES or parts[1] in CORE:
        return parts[1]
    raise AssertionError(f"{module} lies in no layer")


def _edges_with_places() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for layer, path, package in _modules():
        for module in _imports(path, package):
            target = _layer(module)
            if target is not None and target != layer:
                edges.setdefault((layer, target), []).append(str(path.relative_to(ROOT)))
    return edges


def _edges() -> set[tuple[str, str]]:
    return set(_edges_with_places())


def test_every_core_module_lies_in_a_layer():
    assert sorted(p.name for p in (ROOT / "sdopt").iterdir() if p.suffix == ".py") == ["__init__.py"]
    assert sorted(p.name for p in (ROOT / "sdopt").iterdir() if p.is_dir() and (p / "__init__.py").exists()) \
        == sorted(CORE)


def test_layers_import_downward_only():
    upward = []
    for (layer, target), places in _edges_with_places().items():
        if layer == "runtime":
            continue  # its own rule below
        if target == "runtime":
            if RANKS[layer] < RANKS["app"]:
                upward += [f"{place} -> runtime" for place in places]
            continue
        if RANKS[target] > RANKS[layer] or (RANKS[target] == RANKS[layer] and layer != target):
            upward += [f"{place} -> {target}" for place in places if (place, target) not in ALLOWED_UPWARD]
    assert upward == []


def test_the_runtime_depends_on_the_contract_alone():
    assert {target for layer, target in _edges() if layer == "runtime"} <= {"contract"}


def test_no_import_cycle_between_modules():
    """Module by module over the whole package, lazy imports included, but for the callable face named in
    ALLOWED_UPWARD."""
    modules = {}
    for layer, path, package in _modules():
        stem = path.with_suffix("").name
        name = ".".join(package if stem == "__init__" else [*package, stem])
        modules[name] = (str(path.relative_to(ROOT)), set(_imports(path, package)))
    graph = {}
    for name, (place, imported) in modules.items():
        targets = set()
        for module in imported:
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module and module != name and not any(place == a and _layer(module) == b
                                                     for a, b in ALLOWED_UPWARD):
                targets.add(module)
        graph[name] = targets
    cycles = []
    for start in graph:
        stack, seen = [(start, (start,))], {start}
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(trail)
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))
    assert cycles == []


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
    from sdopt.compress.registry import registry

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
