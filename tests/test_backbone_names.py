"""No module of the stage folders names the UNet's calling convention: what is particular to a denoiser family
lives in its backbone adapter (sdopt/backbones/), and the passes, calibration, the exporter and the runtime ask
it. Names are read from the syntax tree: identifiers, attributes, arguments, imports and string constants
(docstrings included)."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("compress", "calibration", "export", "runtime")
CONVENTION = re.compile(r"unet|added_cond_kwargs|encoder_hidden_states", re.IGNORECASE)  # run_unet,
# UNet2DConditionModel and every other spelling of "unet" included


def convention_names(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, ast.keyword):
            names = [node.arg or ""]
        elif isinstance(node, ast.alias):
            names = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {name[:60]!r}" for name in names
                  if CONVENTION.search(name)]
    return found


@pytest.mark.parametrize("folder", STAGES)
def test_no_stage_module_names_the_unet_convention(folder):
    found = [hit for path in sorted((ROOT / folder).rglob("*.py")) for hit in convention_names(path)]
    assert found == []


def test_the_check_sees_the_convention(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('"""x"""\nfrom sdopt.backbones.unet.convention import run_unet\n'
                     'def f(pipe, added_cond_kwargs=None):\n    return pipe.unet(encoder_hidden_states=1)\n')
    probe_root_relative = [hit.split(": ", 1)[1] for hit in convention_names_outside(probe)]
    assert probe_root_relative == ["'sdopt.backbones.unet.convention'", "'run_unet'", "'added_cond_kwargs'",
                                   "'unet'", "'encoder_hidden_states'"]


def convention_names_outside(path: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return convention_names(path)
    finally:
        ROOT = saved
