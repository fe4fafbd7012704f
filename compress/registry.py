"""The pass registry. Each pass module in `sdopt.compress` registers itself (torchao's pattern: a config
dataclass bound to its apply function), with the order constraints it needs in a recipe and the command-line
shortcuts it offers. Nothing outside a pass module names a pass: recipes, `--set` and the CLI read this.

Torch-free: registration stores functions; `registry()` imports the pass modules (which need torch).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from sdopt.backbones.registry import PASS_FAMILIES
from sdopt.contract.errors import SdoptError


@dataclass(frozen=True)
class Shortcut:
    """A `sdopt compress` flag of a pass. `key` set: the flag sets that (dotted) key of the recipe's pass
    of this name; `key` None: each use inserts a new pass entry, `convert(value) -> options`, before the
    recipe's own passes (for example `--lora FILE[:SCALE]`)."""

    flag: str
    key: str | None
    argparse: dict = field(default_factory=dict)  # add_argument keywords: type, choices, help, action, metavar
    convert: Callable | None = None  # the flag's value -> the config value (or, for inserts, the pass options)


@dataclass(frozen=True)
class Pass:
    name: str
    config: type  # frozen dataclass, validated in __post_init__
    apply: Callable  # (source, config) -> source
    check: Callable | None = None  # (source, config) -> None: checks that need the loaded model, before any pass
    before: tuple[str, ...] = ()  # passes this one must precede in a recipe ("*": every other pass)
    after: tuple[str, ...] = ()  # passes this one must follow
    requires: tuple[str, ...] = ()  # passes that must come before this one in the recipe
    excludes: tuple[str, ...] = ()  # passes that cannot be in the same recipe
    shortcuts: tuple[Shortcut, ...] = ()
    repeatable: bool = False  # may stand in a recipe more than once (a LoRA per file); others apply once
    families: tuple[str, ...] = PASS_FAMILIES  # backbone families (sdopt.backbones) the pass can change


_PASSES: dict[str, Pass] = {}


def register(name: str, config: type, apply: Callable, **options) -> Pass:
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"pass {name}: its config must be a dataclass")
    if name in _PASSES and _PASSES[name].apply is not apply:
        raise TypeError(f"pass {name} is registered twice")
    _PASSES[name] = Pass(name, config, apply, **options)
    return _PASSES[name]


def registry() -> dict[str, Pass]:
    """Every registered pass, importing the modules of `sdopt.compress` once."""
    import sdopt.compress

    for module in pkgutil.iter_modules(sdopt.compress.__path__):
        importlib.import_module(f"sdopt.compress.{module.name}")
    return dict(_PASSES)


def check_family(spec: Pass, family: str, pipeline_class: str) -> None:
    """Refuse, before any work, a pass on a backbone family it does not know."""
    if family not in spec.families:
        raise SdoptError(f"{spec.name}: does not support the {family} backbone ({pipeline_class}) yet; it supports "
                         + ", ".join(spec.families))


def check_order(names: list[str], passes: dict[str, Pass], where: str) -> None:
    """Refuse a recipe whose pass order breaks a constraint a pass declared."""
    for i, name in enumerate(names):
        spec = passes[name]
        if not spec.repeatable and name in names[:i]:
            raise SdoptError(f"{where}: the {name} pass stands in it twice; it applies once")
        for needed in spec.requires:
            if needed not in names[:i]:
                raise SdoptError(f"{where}: {name} needs a {needed} pass before it")
        for j, other in enumerate(names):
            if other == name:
                continue
            if other in spec.excludes:
                raise SdoptError(f"{where}: {name} and {other} do not compose")
            if j > i and other in spec.after:
                raise SdoptError(f"{where}: {name} must come after {other}")
            if j < i and ("*" in spec.before or other in spec.before):
                raise SdoptError(f"{where}: {name} must come before {other}")
