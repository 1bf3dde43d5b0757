"""Load and save the shared types as JSON or YAML, validated, with errors that name the
file, the field and the value (pydantic does the checking; this turns its report into one
readable line per problem)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mmesim.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class Model(BaseModel):
    """Base of the shared types: unknown fields are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            path.write_text(json.dumps(data, indent=2) + "\n")
        return path


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _lookup(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def validate(cls: type[T], data: Any, source: str | None = None) -> T:
    """Build ``cls`` from plain data; raise ConfigError naming source, field and value."""
    try:
        return cls.model_validate(data)
    except ConfigError as exc:      # raised by a validator (e.g. a catalogue lookup): add the file
        if exc.source is not None:
            raise
        raise ConfigError(exc.message, source=source or cls.__name__, field=exc.field, value=exc.value) from None
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = tuple(p for p in first["loc"] if p not in ("function-after", "function-before"))
        msg = first["msg"]
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more problem(s))"
        raise ConfigError(msg, source=source or cls.__name__, field=_field_path(loc) or None,
                          value=first.get("input") if loc and first["type"] != "missing" else None) from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents; ConfigError naming the file if it is missing, unreadable
    or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such file", source=str(path))
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}",
                          source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None


def read_data(path: str | Path) -> Any:
    """Parse a JSON or YAML file, with a clear error if it is missing or malformed."""
    path = Path(path)
    text = read_text(path)
    try:
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}",
                          source=str(path)) from None


def load(cls: type[T], path: str | Path) -> T:
    return validate(cls, read_data(path), source=str(path))
