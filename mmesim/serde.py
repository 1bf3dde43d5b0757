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
    """Base of the shared types: unknown fields are errors (a typo must not pass silently),
    and so are NaN and infinity (a rate or a time that is not a number would run forever or
    compare false with every bound)."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True, allow_inf_nan=False)

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
    if data is None:
        raise ConfigError("empty file: expected field: value pairs", source=source or cls.__name__)
    if not isinstance(data, (dict, cls)):
        raise ConfigError(f"expected field: value pairs at the top, found a {_kind(data)}",
                          source=source or cls.__name__)
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


def _kind(data: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(data),
                                                                                            type(data).__name__)


def check_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a Path if it is a regular file; a ConfigError naming it if it is missing or a folder."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"is a folder, not a {what}", source=str(path))
    if not path.is_file():
        raise ConfigError(f"no such {what}", source=str(path))
    return path


def check_out_folder(path: str | Path, field: str = "--out") -> Path:
    """``path`` as a Path once it is a folder (made here if need be); a ConfigError naming
    ``field`` if it, or a folder above it, is a file, or if it cannot be made (no permission, a
    read-only or virtual file system). Checked before any work, so that hours of it are not lost
    when the results cannot be written."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"{part} is a file, not a folder", field=field, value=str(path))
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make this folder: {exc.strerror or exc}", field=field, value=str(path)) from None
    return path


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents; ConfigError naming the file if it is missing, a folder,
    unreadable or not UTF-8."""
    path = check_file(path)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}",
                          source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently, so a second ``popularity:`` block would replace the first unseen)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _unique_pairs(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"key '{twice[0]}' given twice")
    return dict(pairs)


def _yaml_error(exc: yaml.YAMLError) -> str:
    """One line: what PyYAML found and where (its own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def read_data(path: str | Path) -> Any:
    """Parse a JSON or YAML file, with a one-line error if it is missing or malformed (a key
    given twice included)."""
    path = Path(path)
    text = read_text(path)
    is_yaml = path.suffix in (".yaml", ".yml")
    if not text.strip():
        raise ConfigError("empty file", source=str(path))
    try:
        if is_yaml:
            return yaml.load(text, Loader=_UniqueKeyLoader)
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {_yaml_error(exc)}", source=str(path)) from None
    except ValueError as exc:          # json.JSONDecodeError, or a key given twice
        raise ConfigError(f"not valid JSON: {exc}", source=str(path)) from None


def read_fields(path: str | Path) -> dict:
    """A file of ``field: value`` pairs (an EndpointConfig to which flags are added) as a dict."""
    data = read_data(path)
    if not isinstance(data, dict):
        raise ConfigError("empty file: expected field: value pairs" if data is None else
                          f"expected field: value pairs at the top, found a {_kind(data)}", source=str(path))
    return data


def load(cls: type[T], path: str | Path) -> T:
    return validate(cls, read_data(path), source=str(path))
