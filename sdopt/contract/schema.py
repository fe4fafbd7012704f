"""Checks for JSON documents that someone else may have written (manifests, configs): every value is
type- and range-checked before any of it is used, and a failure names the offending key path.

A spec is a function `(value, path) -> None` that raises `Invalid`; the constructors below build them.
Torch-free: the runtime validates artifacts with it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Callable

Spec = Callable[[object, str], None]


class Invalid(Exception):
    def __init__(self, path: str, message: str):
        super().__init__(f"{path or 'top level'}: {message}")
        self.path, self.message = path, message


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def string(pattern: str | None = None, max_length: int = 4096, choices: tuple | None = None) -> Spec:
    compiled = re.compile(pattern) if pattern else None

    def check(value, path):
        if not isinstance(value, str):
            raise Invalid(path, f"expected a string, got {_type_name(value)}")
        if len(value) > max_length:
            raise Invalid(path, f"string longer than {max_length} characters")
        if choices is not None and value not in choices:
            raise Invalid(path, f"{_shown(value)} is not one of {', '.join(map(str, choices))}")
        if compiled is not None and not compiled.fullmatch(value):
            raise Invalid(path, f"{_shown(value)} is not a valid name here")
    return check


def integer(low: int | None = None, high: int | None = None) -> Spec:
    def check(value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, f"expected an integer, got {_type_name(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise Invalid(path, f"{value} is outside [{low}, {high}]")
    return check


def number(low: float | None = None, high: float | None = None, low_open: bool = False) -> Spec:
    def check(value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(path, f"expected a number, got {_type_name(value)}")
        if not math.isfinite(value):
            raise Invalid(path, f"{value} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise Invalid(path, f"{value} must be {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            raise Invalid(path, f"{value} must be <= {high}")
    return check


def boolean() -> Spec:
    def check(value, path):
        if not isinstance(value, bool):
            raise Invalid(path, f"expected true or false, got {_type_name(value)}")
    return check


def nullable(spec: Spec) -> Spec:
    def check(value, path):
        if value is not None:
            spec(value, path)
    return check


def either(*specs: Spec) -> Spec:
    """The first spec's error is reported when none accepts the value."""
    def check(value, path):
        first = None
        for spec in specs:
            try:
                spec(value, path)
                return
            except Invalid as err:
                first = first or err
        raise first
    return check


def array(item: Spec, max_length: int = 100_000, min_length: int = 0) -> Spec:
    def check(value, path):
        if not isinstance(value, list):
            raise Invalid(path, f"expected a list, got {_type_name(value)}")
        if not min_length <= len(value) <= max_length:
            raise Invalid(path, f"{len(value)} entries; expected {min_length} to {max_length}")
        for i, v in enumerate(value):
            item(v, f"{path}[{i}]")
    return check


def mapping(key: Spec, value: Spec, max_length: int = 100_000, min_length: int = 0) -> Spec:
    def check(data, path):
        if not isinstance(data, dict):
            raise Invalid(path, f"expected a mapping, got {_type_name(data)}")
        if not min_length <= len(data) <= max_length:
            raise Invalid(path, f"{len(data)} entries; expected {min_length} to {max_length}")
        for k, v in data.items():
            key(k, f"{path}.{k}" if path else str(k))
            value(v, f"{path}.{k}" if path else str(k))
    return check


def record(required: dict[str, Spec], optional: dict[str, Spec] | None = None) -> Spec:
    """A mapping with these keys and no others."""
    optional = optional or {}

    def check(data, path):
        if not isinstance(data, dict):
            raise Invalid(path, f"expected a mapping, got {_type_name(data)}")
        missing = [k for k in required if k not in data]
        if missing:
            raise Invalid(path, f"missing key '{missing[0]}'")
        unknown = [k for k in data if k not in required and k not in optional]
        if unknown:
            raise Invalid(path, f"unknown key {_shown(unknown[0])}")
        for k, v in data.items():
            (required.get(k) or optional[k])(v, f"{path}.{k}" if path else k)
    return check


def anything(max_depth: int = 16) -> Spec:
    """Any JSON value, nested at most `max_depth` deep (free-form records such as pass reports)."""
    def check(value, path, depth=0):
        if depth > max_depth:
            raise Invalid(path, f"nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            for k, v in value.items():
                check(v, f"{path}.{k}", depth + 1)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                check(v, f"{path}[{i}]", depth + 1)
        elif isinstance(value, float) and not math.isfinite(value):
            raise Invalid(path, f"{value} is not a finite number")
    return check


def json_safe(value):
    """`value` with every non-finite float replaced by None (null: undefined, or infinite as the PSNR of
    identical images), and numpy scalars as Python numbers, so that strict JSON can hold it."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def parse_json(data: bytes) -> object:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, bounded nesting. ValueError otherwise."""
    def no_duplicates(pairs):
        result = {}
        for k, v in pairs:
            if k in result:
                raise ValueError(f"duplicate key {_shown(k)}")
            result[k] = v
        return result

    def no_constants(name):
        raise ValueError(f"{name} is not valid JSON")

    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text (byte {err.start})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
