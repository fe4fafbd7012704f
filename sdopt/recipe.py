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

from .errors import SdoptError
from .safe_io import read_text

BUILTIN = {
    "fp32": [],
    "int8": [{"pass": "quantize", "format": "int8"}],
    "fp8": [{"pass": "quantize", "format": "fp8"}],
    "w4a8": [{"pass": "quantize", "format": "w4a8"}],
}
PASS_ORDER = ("prune", "distill", "quantize", "cache")


RECIPE_KEYS = ("name", "passes")


def _registry() -> dict:
    """pass name -> (config class, apply function, check function). Imported lazily: passes need torch."""
    from sdopt.compress import quantize

    return {"quantize": (quantize.QuantizeConfig, quantize.apply, quantize.check)}


@dataclass(frozen=True)
class Recipe:
    name: str
    passes: tuple  # of (pass name, config dataclass)

    def to_dict(self) -> dict:
        return {"name": self.name,
                "passes": [{"pass": p, **_asdict(c)} for p, c in self.passes]}


def resolve(spec: str, calibration_overrides: dict | None = None, quantize_overrides: dict | None = None) -> Recipe:
    """A built-in name or a YAML file -> validated Recipe. `calibration_overrides` (from CLI flags)
    replace fields of every pass's calibration config, `quantize_overrides` fields of the quantize pass;
    overrides that no pass of the recipe takes are refused."""
    if spec in BUILTIN:
        name, entries = spec, BUILTIN[spec]
    elif Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file():
        name, entries = _load_yaml(spec)
    else:
        raise SdoptError(f"unknown recipe '{spec}'; built-in: {', '.join(BUILTIN)}, or a YAML file")
    registry = _registry() if entries else {}  # fp32 needs no pass, and no torch import to say so
    passes = []
    calibrated = False
    for entry in entries:
        if not isinstance(entry, dict):
            raise SdoptError(f"recipe '{spec}': each pass must be a mapping with a 'pass' key")
        entry = dict(entry)
        pass_name = entry.pop("pass", None)
        if not isinstance(pass_name, str) or pass_name not in registry:
            raise SdoptError(f"recipe '{spec}': unknown pass {pass_name!r}; available: " + ", ".join(registry))
        config_class = registry[pass_name][0]
        if pass_name == "quantize" and quantize_overrides:
            entry.update(quantize_overrides)
        if "calibration" in {f.name for f in dataclasses.fields(config_class)}:
            calibrated = True
            if calibration_overrides:
                calibration = entry.get("calibration", {})
                if not isinstance(calibration, dict):
                    raise SdoptError(f"recipe '{spec}', pass {pass_name}: calibration must be a mapping, "
                                     f"got {_shown(calibration)}")
                entry["calibration"] = {**calibration, **calibration_overrides}
        passes.append((pass_name, build_config(config_class, entry, f"recipe '{spec}', pass {pass_name}")))
    if calibration_overrides and not calibrated:
        raise SdoptError(f"calibration option '{next(iter(calibration_overrides))}' needs a recipe with a calibrated "
                         f"pass (int8, fp8, w4a8); recipe '{spec}' has none")
    passes.sort(key=lambda p: PASS_ORDER.index(p[0]))
    return Recipe(name, tuple(passes))


def check(source, recipe: Recipe) -> None:
    """What each pass can only check against the loaded model (sizes, steps, prompts), before any pass runs."""
    registry = _registry() if recipe.passes else {}
    for pass_name, config in recipe.passes:
        registry[pass_name][2](source, config)


def apply(source, recipe: Recipe):
    registry = _registry() if recipe.passes else {}
    for pass_name, config in recipe.passes:
        source = registry[pass_name][1](source, config)
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
    import yaml

    path = Path(spec)
    if not path.is_file():
        raise SdoptError(f"recipe file '{spec}' does not exist")
    text = read_text(path, "recipe file", max_bytes=1 << 20)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SdoptError(f"recipe file '{spec}': invalid YAML ({first})") from None
    except RecursionError:
        raise SdoptError(f"recipe file '{spec}': nested too deeply") from None
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
