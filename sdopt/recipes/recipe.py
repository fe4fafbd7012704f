"""Recipes: an ordered list of passes with their configs, by built-in name or from a YAML file.

YAML form:
    name: my-int8
    passes:
      - pass: quantize
        format: int8
        skip: [conv_in, conv_out]
        calibration: {num_prompts: 8, steps: 20, size: 256}
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from sdopt.compress import registry as pass_registry
from sdopt.contract.errors import SdoptError
from sdopt.contract.safe_io import read_text

BUILTIN = {
    "fp32": [],
    "int8": [{"pass": "quantize", "format": "int8"}],
    "fp8": [{"pass": "quantize", "format": "fp8"}],
    "w4a8": [{"pass": "quantize", "format": "w4a8"}],
    "cache": [{"pass": "cache"}],
    "int8+cache": [{"pass": "quantize", "format": "int8"}, {"pass": "cache"}],
    "prune-base": [{"pass": "prune", "blocks": "base"}, {"pass": "distill"}],
    "prune-small": [{"pass": "prune", "blocks": "small"}, {"pass": "distill"}],
    "prune-channels": [{"pass": "prune", "blocks": "none", "macs": 0.8}, {"pass": "distill"}],
    "lcm": [{"pass": "lcm", "steps": 4}],
    "lcm-lora": [{"pass": "lcm", "steps": 4, "lora_rank": 64}],
    "tiny-vae": [{"pass": "tiny-vae"}],
}
RECIPE_KEYS = ("name", "passes")


@dataclass(frozen=True)
class Recipe:
    name: str
    passes: tuple  # of (pass name, config dataclass), in the order they run

    def to_dict(self) -> dict:
        return {"name": self.name,
                "passes": [{"pass": p, **_asdict(c)} for p, c in self.passes]}


@dataclass(frozen=True)
class Override:
    """One option of one pass of the recipe, set from the command line (`--set` or a pass's shortcut)."""

    pass_name: str
    key: str  # dotted path inside the pass's options, e.g. "calibration.intervals"
    value: object
    origin: str  # how the user said it, for errors


def parse_set(text: str) -> Override:
    """`PASS.KEY=VALUE` (KEY may be dotted; VALUE is read as YAML: 4, 0.5, true, [a, b], text)."""
    target, eq, raw = text.partition("=")
    pass_name, dot, key = target.partition(".")
    if not eq or not dot or not pass_name or not key or any(not part for part in key.split(".")):
        raise SdoptError(f"--set {text}: expected PASS.KEY=VALUE, for example quantize.calibration.intervals=4")
    shown = text if len(text) <= 60 else text[:57] + "..."
    value = parse_yaml(raw, f"--set {shown}: the value") if raw.strip() else ""
    return Override(pass_name, key, value, f"--set {text}")


MAX_YAML_DEPTH = 16  # a recipe's options nest a few levels; deeper is not a recipe


def parse_yaml(text: str, where: str):
    """YAML from the user (a recipe file, a --set value): safe_load, one error line for any malformed input."""
    import yaml

    try:
        data = yaml.load(text, Loader=_loader())
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SdoptError(f"{where}: invalid YAML ({first})") from None
    except RecursionError:
        raise SdoptError(f"{where}: nested too deeply (more than {MAX_YAML_DEPTH} levels)") from None
    if _depth(data) > MAX_YAML_DEPTH:
        raise SdoptError(f"{where}: nested too deeply (more than {MAX_YAML_DEPTH} levels)")
    return data


def _loader():
    """YAML's safe loader, reading 1e-5 as the number people mean (YAML 1.1 wants 1.0e-5 and gives a string)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


def _depth(value, limit: int = MAX_YAML_DEPTH + 1) -> int:
    if limit <= 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in children), default=0)


def resolve(spec: str, overrides: tuple | list = (), inserted: tuple | list = ()) -> Recipe:
    """A built-in name or a YAML file -> validated Recipe, in the user's order. `inserted` (pass name,
    options) entries go first (shortcuts such as --lora); each `Override` sets an option of the recipe's one
    pass of that name."""
    if spec in BUILTIN:
        name, entries = spec, BUILTIN[spec]
    elif "+" in spec and all(part in BUILTIN for part in spec.split("+")):
        name, entries = spec, [entry for part in spec.split("+") for entry in BUILTIN[part]]  # e.g. prune-small+int8
    elif Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file():
        name, entries = _load_yaml(spec)
    else:
        raise SdoptError(f"unknown recipe '{spec}'; built-in: {', '.join(BUILTIN)} (joined with +, e.g. "
                         f"prune-small+int8+cache), or a YAML file")
    entries = [{"pass": p, **options} for p, options in inserted] + list(entries)
    registry = pass_registry.registry() if entries or overrides else {}  # fp32 alone needs no torch import
    where = f"recipe '{spec}'"
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SdoptError(f"{where}: each pass must be a mapping with a 'pass' key")
        entries[i] = dict(entry)
        if not isinstance(entry.get("pass"), str) or entry["pass"] not in registry:
            raise SdoptError(f"{where}: unknown pass {entry.get('pass')!r}; available: " + ", ".join(registry))
    for override in overrides:
        _set_option(entries, override, registry, where)
    configs = [(entry.pop("pass"), entry) for entry in entries]
    built = [(p, build_config(registry[p].config, options, f"{where}, pass {p}")) for p, options in configs]
    pass_registry.check_order([p for p, _ in built], registry, where)
    return Recipe(name, tuple(built))


def _set_option(entries: list[dict], override: Override, registry: dict, where: str) -> None:
    if override.pass_name not in registry:
        raise SdoptError(f"{override.origin}: unknown pass '{override.pass_name}'; available: " + ", ".join(registry))
    targets = [e for e in entries if e["pass"] == override.pass_name]
    if not targets:
        raise SdoptError(f"{override.origin} applies to the {override.pass_name} pass; {where} has none")
    if len(targets) > 1:
        raise SdoptError(f"{override.origin}: {where} has {len(targets)} {override.pass_name} passes; set the "
                         f"option in a recipe file")
    node, keys = targets[0], override.key.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise SdoptError(f"{override.origin}: {key} is not a mapping of options")
    node[keys[-1]] = override.value


def check(source, recipe: Recipe) -> None:
    """What each pass can only check against the loaded model (sizes, steps, prompts), before any pass runs."""
    registry = pass_registry.registry() if recipe.passes else {}
    for pass_name, _ in recipe.passes:
        pass_registry.check_family(registry[pass_name], source.backbone.family, type(source.pipeline).__name__)
    for pass_name, config in recipe.passes:
        if registry[pass_name].check is not None:
            registry[pass_name].check(source, config)


def apply(source, recipe: Recipe):
    """The passes in order; a secondary process of a multi-process pass stops after it."""
    registry = pass_registry.registry() if recipe.passes else {}
    for pass_name, config in recipe.passes:
        source = registry[pass_name].apply(source, config)
        if source.outputs.secondary:
            break
    return source


def build_config(config_class, values: dict, where: str):
    """Nested dict -> frozen config dataclass: unknown keys refused, every value of its field's type (a bool
    is a bool, an int an int; numbers finite), nested configs from mappings."""
    if not isinstance(values, dict):
        raise SdoptError(f"{where}: must be a mapping of options, got {_shown(values)}")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = set(values) - set(fields)
    if unknown:
        raise SdoptError(f"{where}: unknown option(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"known: {', '.join(fields)}")
    hints = typing.get_type_hints(config_class)
    kwargs = {key: _typed(value, hints[key], f"{where}: {key}") for key, value in values.items()}
    try:
        return config_class(**kwargs)
    except TypeError as err:
        raise SdoptError(f"{where}: {err}") from err


def _typed(value, hint, where: str):
    """`value` as the type `hint` says (int / float / bool / str, `X | None`, `tuple[T, ...]`, a config)."""
    if dataclasses.is_dataclass(hint):
        return build_config(hint, value, where)
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(value, inner, where)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise SdoptError(f"{where} must be a list, got {_shown(value)}")
        return tuple(_typed(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise SdoptError(f"{where} must be true or false, got {_shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SdoptError(f"{where} must be an integer, got {_shown(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SdoptError(f"{where} must be a finite number, got {_shown(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SdoptError(f"{where} must be a string, got {_shown(value)}")
        return value
    raise TypeError(f"{where}: config fields of type {hint} are not supported")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _load_yaml(spec: str):
    path = Path(spec)
    if not path.is_file():
        raise SdoptError(f"recipe file '{spec}' does not exist")
    text = read_text(path, "recipe file", max_bytes=1 << 20)
    data = parse_yaml(text, f"recipe file '{spec}'")
    if not isinstance(data, dict):
        raise SdoptError(f"recipe file '{spec}': expected a mapping with a 'passes' list")
    unknown = [k for k in data if k not in RECIPE_KEYS]
    if unknown:
        raise SdoptError(f"recipe file '{spec}': unknown key {_shown(unknown[0])}; known: {', '.join(RECIPE_KEYS)}")
    if not isinstance(data.get("passes", []), list):
        raise SdoptError(f"recipe file '{spec}': 'passes' must be a list")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name or len(name) > 256:
        raise SdoptError(f"recipe file '{spec}': 'name' must be a non-empty string")
    return name, data.get("passes") or []


def _asdict(config) -> dict:
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(config))
