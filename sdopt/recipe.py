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
from dataclasses import dataclass
from pathlib import Path

from .errors import SdoptError

BUILTIN = {
    "fp32": [],
    "int8": [{"pass": "quantize", "format": "int8"}],
    "fp8": [{"pass": "quantize", "format": "fp8"}],
    "w4a8": [{"pass": "quantize", "format": "w4a8"}],
}
PASS_ORDER = ("prune", "distill", "quantize", "cache")


def _registry() -> dict:
    """pass name -> (config class, apply function). Imported lazily: passes need torch."""
    from sdopt.compress import quantize

    return {"quantize": (quantize.QuantizeConfig, quantize.apply)}


@dataclass(frozen=True)
class Recipe:
    name: str
    passes: tuple  # of (pass name, config dataclass)

    def to_dict(self) -> dict:
        return {"name": self.name,
                "passes": [{"pass": p, **_asdict(c)} for p, c in self.passes]}


def resolve(spec: str, calibration_overrides: dict | None = None, quantize_overrides: dict | None = None) -> Recipe:
    """A built-in name or a YAML file -> validated Recipe. `calibration_overrides` (from CLI flags)
    replace fields of every pass's calibration config, `quantize_overrides` fields of the quantize pass."""
    if spec in BUILTIN:
        name, entries = spec, BUILTIN[spec]
    elif Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file():
        name, entries = _load_yaml(spec)
    else:
        raise SdoptError(f"unknown recipe '{spec}'; built-in: {', '.join(BUILTIN)}, or a YAML file")
    registry = _registry() if entries else {}  # fp32 needs no pass, and no torch import to say so
    passes = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise SdoptError(f"recipe '{spec}': each pass must be a mapping with a 'pass' key")
        entry = dict(entry)
        pass_name = entry.pop("pass", None)
        if pass_name not in registry:
            raise SdoptError(f"recipe '{spec}': unknown pass {pass_name!r}; available: " + ", ".join(registry))
        config_class = registry[pass_name][0]
        if pass_name == "quantize" and quantize_overrides:
            entry.update(quantize_overrides)
        if calibration_overrides and "calibration" in {f.name for f in dataclasses.fields(config_class)}:
            entry["calibration"] = {**entry.get("calibration", {}), **calibration_overrides}
        passes.append((pass_name, build_config(config_class, entry, f"recipe '{spec}', pass {pass_name}")))
    passes.sort(key=lambda p: PASS_ORDER.index(p[0]))
    return Recipe(name, tuple(passes))


def apply(source, recipe: Recipe):
    registry = _registry() if recipe.passes else {}
    for pass_name, config in recipe.passes:
        source = registry[pass_name][1](source, config)
    return source


def build_config(config_class, values: dict, where: str):
    """Nested dict -> frozen config dataclass, refusing unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = set(values) - set(fields)
    if unknown:
        raise SdoptError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(fields)}")
    kwargs = {}
    for key, value in values.items():
        default = fields[key].default_factory() if fields[key].default_factory is not dataclasses.MISSING \
            else fields[key].default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = build_config(type(default), value, f"{where}.{key}")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return config_class(**kwargs)
    except TypeError as err:
        raise SdoptError(f"{where}: {err}") from err


def _load_yaml(spec: str):
    import yaml

    path = Path(spec)
    if not path.is_file():
        raise SdoptError(f"recipe file '{spec}' does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SdoptError(f"recipe file '{spec}': invalid YAML ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("passes", []), list):
        raise SdoptError(f"recipe file '{spec}': expected a mapping with a 'passes' list")
    return str(data.get("name", path.stem)), data.get("passes", [])


def _asdict(config) -> dict:
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(config))
