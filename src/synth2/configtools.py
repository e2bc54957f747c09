"""Typed dataclass configs from dicts, YAML files and `a.b=c` overrides.

Our own ~100 lines rather than OmegaConf/dacite: we need exactly three things
(typed construction with an error naming the unknown key, dotted overrides,
round-trip to YAML) and nothing else, and every config here is a plain
dataclass that a reader can follow without a framework.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml

from synth2.files import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's types."""


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys raise ConfigError naming them."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        dotted = ", ".join(f"{where}{k}" for k in unknown)
        raise ConfigError(f"unknown config key(s): {dotted} (valid keys here: {', '.join(sorted(names))})")
    kwargs = {name: _coerce(hints[name], value, f"{where}{name}") for name, value in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dicts/lists, the inverse of `from_dict`."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def merge(cfg: T, data: dict[str, Any], where: str = "") -> T:
    """Return `cfg` with the (possibly nested, partial) values in `data` applied."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    updates = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key: {where}{key} (valid keys here: {', '.join(sorted(names))})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            updates[key] = merge(current, value, f"{where}{key}.")
        elif isinstance(current, dict) and isinstance(value, dict) and not value:
            updates[key] = {}  # `--set a.b={}` empties a mapping (merging nothing would change nothing)
        elif isinstance(current, dict) and isinstance(value, dict):
            # a mapping field (data.text_only, world.text_only, ...) is updated key by key, so
            # `--set data.text_only.a=X --set data.text_only.b=Y` keeps both
            merged = dict(current)
            for name, item in value.items():
                name = _coerce_key(_key_type(hints[key]), name, f"{where}{key}")
                if dataclasses.is_dataclass(merged.get(name)) and isinstance(item, dict):
                    merged[name] = merge(merged[name], item, f"{where}{key}.{name}.")
                else:
                    merged[name] = _coerce(hints[key], {name: item}, f"{where}{key}")[name]
            updates[key] = merged
        else:
            updates[key] = _coerce(hints[key], value, f"{where}{key}")
    return dataclasses.replace(cfg, **updates)


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Apply `a.b.c=value` strings; the value is parsed as YAML (so 3, 0.1, true, [1, 2] work)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        path, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        nested: dict[str, Any] = {}
        node = nested
        parts = path.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        cfg = merge(cfg, nested)
    return cfg


def load_yaml(cls: type[T], path: str | Path) -> T:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def dump_yaml(cfg: Any, path: str | Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))  # other processes may read it meanwhile


def _key_type(tp: Any) -> Any:
    """The key type of a mapping field's type (`dict[K, V]`, or one inside an Optional)."""
    if get_origin(tp) in (Union, types.UnionType):
        return next((_key_type(arg) for arg in get_args(tp) if get_origin(arg) is dict), Any)
    return (get_args(tp) or (Any,))[0]


def _coerce_key(tp: Any, key: Any, where: str) -> Any:
    """A mapping's key as `tp`: JSON, and YAML when quoted, give an integer key as a string."""
    if tp is int and isinstance(key, str):
        try:
            return int(key)
        except ValueError:
            raise ConfigError(f"{where}: key {key!r} is not an integer") from None
    return _coerce(tp, key, f"{where} key")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, f"{where}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {_coerce_key(key_tp, k, where): _coerce(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "2e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value
