"""The JSON schema of a run's config, and the check of its keys that needs no torch.

``tlhub schema > tlhub.schema.json`` prints the schema that editors use to complete and check
YAML files (the YAML language server: ``# yaml-language-server: $schema=tlhub.schema.json``).
It is generated from the settings classes and from transformers' ``Seq2SeqTrainingArguments``
(:func:`build_schema`, which imports them) and shipped as ``resources/config.schema.json``;
a test keeps the shipped copy equal to the generated one.

Reading the shipped copy is cheap, so ``tlhub train`` and ``tlhub compare`` check the keys of
a config against it (:func:`check_keys`) before torch and transformers load: a misspelled key
fails in a fraction of a second, with the same message the full check gives. Everything else
(types, ranges, combinations) is checked when the config is built (:mod:`tlhub.config`).
This module imports only the standard library, yaml and tlhub's settings machinery.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from tlhub.errors import ConfigError, closest
from tlhub.settings import merge, parse_overrides, read_yaml

SHIPPED = Path(__file__).parent / "resources" / "config.schema.json"
SCHEMA_ID = "https://github.com/tlhub/tlhub/config.schema.json"


# --------------------------------------------------------------------------- generating (imports the settings' owners)


def _json_type(tp: Any) -> dict[str, Any]:
    """The JSON schema of a Python annotation (what YAML can hold for it)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_json_type(a) for a in typing.get_args(tp)]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if tp is type(None):
        return {"type": "null"}
    if dataclasses.is_dataclass(tp):
        return section_schema(tp)  # type: ignore[arg-type]
    if origin is list:
        return {"type": "array", "items": _json_type(typing.get_args(tp)[0])}
    if origin is dict or tp is dict:
        return {"type": "object"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    if isinstance(tp, type) and issubclass(tp, str):  # transformers' str enums (IntervalStrategy, ...)
        return {"type": "string"}
    return {}


def _default(f: dataclasses.Field) -> Any:
    value = f.default if f.default is not dataclasses.MISSING else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)  # type: ignore[arg-type]
    return value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else str(value)


def section_schema(cls: type) -> dict[str, Any]:
    """A settings dataclass as a JSON object schema: its keys, types, defaults and help."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        prop = {**_json_type(hints.get(f.name, Any)), "description": f.metadata.get("help", "")}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        else:
            default = _default(f)
            try:
                json.dumps(default)
                prop["default"] = default
            except (TypeError, ValueError):
                pass
        properties[f.name] = prop
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = required
    return out


def build_schema() -> dict[str, Any]:
    """The schema of a run config, generated from the settings classes (imports torch)."""
    from tlhub.config import RunConfig
    from tlhub.modalities import MODALITIES
    from tlhub.tasks import TASKS
    from tlhub.training_args import TrainingConfig

    schema = section_schema(RunConfig)
    props = schema["properties"]
    props["modality"] = {**props["modality"], "enum": MODALITIES.in_order()}
    props["task"] = {**props["task"], "enum": TASKS.names()}
    hints = typing.get_type_hints(TrainingConfig)
    training: dict[str, Any] = {}
    for f in dataclasses.fields(TrainingConfig):
        if f.init:
            help_ = " ".join(str(f.metadata.get("help", "")).split())
            training[f.name] = {**_json_type(hints.get(f.name, Any)), "default": _default(f), "description": help_}
    props["training"] = {
        "type": "object", "additionalProperties": False, "required": ["output_dir"], "properties": dict(sorted(training.items())),
        "description": props["training"]["description"],
    }  # fmt: skip
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, "title": "tlhub run config", **schema}


def write_schema(path: Path = SHIPPED) -> None:
    """Regenerate the shipped schema (``python -m tlhub.schema``)."""
    from tlhub.io import atomic_write_text

    atomic_write_text(path, json.dumps(build_schema(), indent=1, sort_keys=False) + "\n")


# --------------------------------------------------------------------------- checking (light)


def shipped() -> dict[str, Any]:
    """The schema shipped with tlhub (no torch needed)."""
    return json.loads(SHIPPED.read_text(encoding="utf-8"))


def training_lines() -> list[str]:
    """One line per key of the `training` section (TrainingConfig's fields, read from the shipped
    schema, so nothing heavy is imported): dotted name, type, default and help (`tlhub config training`)."""
    keys = shipped()["properties"]["training"]["properties"]
    lines = []
    for key, prop in keys.items():
        kinds = [p.get("type", "any") for p in prop.get("anyOf", [prop])]
        default = "null" if prop.get("default") is None else prop["default"]
        lines.append(f"training.{key} [{' | '.join(kinds)}] = {default}:  {prop.get('description', '')}")
    return lines


def check_keys(config: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a config file and its dotted overrides and refuse an unknown key, naming it and the
    closest valid one, as the full check does; return the merged mapping."""
    data = read_yaml(config)
    if overrides:
        data = merge(data, parse_overrides(overrides))
    _walk(data, shipped(), "")
    return data


def _walk(data: dict[str, Any], schema: dict[str, Any], prefix: str) -> None:
    properties = schema.get("properties", {})
    for key, value in data.items():
        if key not in properties:
            if schema.get("additionalProperties") is False:
                raise ConfigError(f"{prefix}{key}: unknown key{closest(str(key), properties)}")
            continue
        sub = _section(properties[key])
        if sub is not None and isinstance(value, dict):
            _walk(value, sub, f"{prefix}{key}.")


def _section(prop: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema a property holds (also inside ``anyOf``: an optional section)."""
    if prop.get("type") == "object" and "properties" in prop:
        return prop
    return next((p for p in prop.get("anyOf", []) if p.get("type") == "object" and "properties" in p), None)


if __name__ == "__main__":
    write_schema()
    print(SHIPPED)
