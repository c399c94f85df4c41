"""Where a config comes from: a shipped preset or a YAML file, then `--set` overrides.

Presets are YAML files shipped in `pit/presets/`; `--set section.field=value`
overrides any field, and all problems (unknown fields, wrong types, values out
of range) are reported at once with their dotted path so a user fixes them in
one pass.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pit.config import PitConfig
from pit.errors import ConfigError


def _format_errors(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            section = _section_of(e["loc"][:-1])
            allowed = ", ".join(section.model_fields) if section else "?"
            msg = f"unknown field; allowed here: {allowed}"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        problems.append(f"{loc}: {msg}")
    return problems


def _section_of(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = PitConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return None
        if not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `a.b=value` strings into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {pair!r}: expected section.field=value, e.g. world.seed=3")
            continue
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    if problems:
        raise ConfigError(problems, source="overrides")
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def preset_names() -> list[str]:
    files = resources.files("pit.presets").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError([f"not valid YAML: {e}"], source=source) from e
    if not isinstance(data, dict):
        raise ConfigError(["top level must be a mapping of sections"], source=source)
    return data


def string_override(field: str, value: str) -> str:
    """A `--set` override whose value stays a string, whatever YAML would make of it."""
    return f"{field}='{value.replace(chr(39), chr(39) * 2)}'"


def load_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> PitConfig:
    """Build a PitConfig from a preset or a YAML file, then apply `--set` overrides."""
    data: dict[str, Any] = {}
    source = "config"
    if preset and config_file:
        raise ConfigError(["give either --preset or --config, not both"], source="command line")
    if preset:
        names = preset_names()
        if preset not in names:
            raise ConfigError(
                [f"unknown preset {preset!r}; shipped presets: {', '.join(names)}"],
                source="command line",
            )
        text = resources.files("pit.presets").joinpath(f"{preset}.yaml").read_text()
        data = _read_yaml(text, f"preset {preset}")
        data.setdefault("preset", preset)
        source = f"preset {preset}"
    elif config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError([f"config file {path} does not exist"], source="command line")
        data = _read_yaml(path.read_text(), str(path))
        data.setdefault("preset", path.stem)
        source = str(path)
    if overrides:
        data = _merge(data, parse_overrides(overrides))
        source += " with --set overrides"
    try:
        return PitConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e), source=source) from None
