"""Errors a user sees. Each names what is wrong and where (file, field, value)."""

from __future__ import annotations


class MmesimError(Exception):
    """Base class: the CLI prints these as one clear message, never a traceback."""


class ConfigError(MmesimError):
    """A bad input file or value: says which file, which field, which value, and why."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None,
                 value: object = None):
        self.message, self.source, self.field, self.value = message, source, field, value
        where = []
        if source:
            where.append(str(source))
        if field:
            where.append(f"field '{field}'")
        if field and value is not None:
            shown = repr(value)
            where.append(f"value {shown if len(shown) < 80 else shown[:77] + '...'}")
        super().__init__(": ".join(where + [message]) if where else message)


class MissingPiece(MmesimError):
    """Something the machine lacks (a GPU, a Docker engine, tritonserver...) and how to get it."""
