"""A `TrainConfig` from a JSON or YAML file, checked key by key.

The file holds any part of `TrainConfig.to_dict()` (omitted keys keep their defaults), and may
name a starting point with `preset: movielens` or `preset: synthetic_demo` (`presets.py`),
which its other keys then override. A key the config does not have, or a value of the wrong
type, is a `ConfigError` naming the file and the dotted key: a typo must not train silently
with a default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing

from tfrs_youtube.training import TrainConfig

SUFFIXES = (".json", ".yaml", ".yml")


class ConfigError(ValueError):
    """The config file cannot be read, or names an unknown key or a value of the wrong type."""


def _presets() -> dict:
    from tfrs_youtube.presets import PRESETS

    return PRESETS


def read_config_file(path: str) -> dict:
    """The file's mapping (JSON, or YAML by suffix); {} for an empty YAML file."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: a config file must end in {', '.join(SUFFIXES)}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte {err.start} is not UTF-8); expected a JSON or YAML "
                          f"TrainConfig") from None
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from err
    except Exception as err:  # yaml.YAMLError; its message spans lines
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    if data is None and suffix != ".json":
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def load_train_config(path: str) -> TrainConfig:
    """Reads and checks a `TrainConfig` file (see the module docstring)."""
    return config_from_dict(read_config_file(path), where=path)


def config_from_dict(data: dict, where: str = "config") -> TrainConfig:
    data = dict(data)
    preset = data.pop("preset", None)
    presets = _presets()
    if preset is not None and preset not in presets:
        raise ConfigError(f"{where}: unknown preset {preset!r} (known: {', '.join(presets)})")
    seed = data.get("seed", 0)
    try:
        base = presets[preset](seed if isinstance(seed, int) else 0) if preset else TrainConfig()
    except ValueError as err:  # e.g. a seed out of range
        raise ConfigError(f"{where}: {err}") from err
    merged = _merge(TrainConfig, base.to_dict(), data, where, "")
    try:
        return TrainConfig.from_dict(merged)
    except (TypeError, ValueError) as err:  # a part's own check (e.g. ServingConfig's k <= N)
        raise ConfigError(f"{where}: {err}") from err


def _merge(cls, base: dict, data: dict, where: str, prefix: str) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in fields:
            section = f"of {prefix[:-1]!r}" if prefix else "at the top level"
            known = ", ".join(sorted(fields)) + ("" if prefix else ", preset")
            raise ConfigError(f"{where}: unknown config key {dotted!r} (known keys {section}: {known})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {dotted} must be a mapping of {hint.__name__} keys, got {value!r}")
            out[key] = _merge(hint, base[key], value, where, dotted + ".")
        else:
            out[key] = _checked(value, hint, where, dotted)
    return out


def _checked(value, hint, where: str, dotted: str):
    """`value` as the field's type wants it (a list for a tuple), or a ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _checked(value, arg, where, dotted)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        # A list in the file; a string stays a string for fields that also take a preset name
        # (RankerConfig.hidden_layers), which the dataclass itself checks.
        ok = isinstance(value, (list, tuple, str))
        value = tuple(value) if isinstance(value, list) else value
    else:
        ok = True
    if not ok:
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{where}: {dotted} must be {name}, got {value!r}")
    return value
