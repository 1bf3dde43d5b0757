"""Locust-format CSV files: write them for a Run, read them from a real load test.

A prediction written as ``<prefix>_stats.csv``, ``<prefix>_stats_history.csv`` and
``<prefix>_failures.csv`` reads like Locust 2.x output (``--csv PREFIX --csv-full-history``),
so the blog's notebooks and any other Locust tooling read predictions unchanged; the readers
turn a measured run's files into the same row dicts the summary code consumes. The numbers
come from ``mmesim.results.locust`` (Locust's arithmetic); this module is the files.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mmesim.errors import ConfigError
from mmesim.results import locust
from mmesim.results.locust import (AGGREGATED, DEFAULT_REQUEST_TYPE, PERCENTILE_COLUMNS, PERCENTILES,  # noqa: F401
                                   Entry, bucket_response_time, percentile_label, response_time_percentile)
from mmesim.results.records import OUTCOMES, TIMEOUT, Run

STATS_COLUMNS = ("Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                 "Average Response Time", "Min Response Time", "Max Response Time",
                 "Average Content Size", "Requests/s", "Failures/s", *PERCENTILE_COLUMNS)
HISTORY_COLUMNS = ("Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s",
                   *PERCENTILE_COLUMNS, "Total Request Count", "Total Failure Count",
                   "Total Median Response Time", "Total Average Response Time",
                   "Total Min Response Time", "Total Max Response Time", "Total Average Content Size")
FAILURES_COLUMNS = ("Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen")
_TEXT_COLUMNS = frozenset({"Type", "Name", "Method", "Error", "First Seen", "Last Seen"})
_RATE_COLUMNS = frozenset({"Requests/s", "Failures/s"})   # history writes these as f"{x:2f}"
_INT_COLUMNS = frozenset(PERCENTILE_COLUMNS)               # ... and int() of each percentile


def stats_rows(run: Run, request_type: str = DEFAULT_REQUEST_TYPE) -> list[list]:
    """Rows of ``_stats.csv`` (without header): per name, then Aggregated, over the requests
    that ended by the run's duration (Locust stops its users there and never logs the rest).
    Requests/s = count / (last logged completion), the run starting at t=0."""
    return locust.stats(run, request_type).stats_rows()


def utc_timestamp(unix_s: float) -> str:
    """Locust's First/Last Seen format."""
    return datetime.fromtimestamp(int(unix_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def failure_rows(run: Run, request_type: str = DEFAULT_REQUEST_TYPE, epoch: float = 0.0) -> list[list]:
    """Rows of ``_failures.csv``: one per (name, cause). ``epoch`` is the unix time of t=0.

    Ordered like Locust orders them (by the sha256 key of method, name and error), which
    looks arbitrary but makes our file byte-comparable with Locust's."""
    a = run.records.arrays()
    failed = np.flatnonzero((a["outcome"] != 0) & (a["end"] <= run.duration_s))
    failed = failed[np.argsort(a["end"][failed], kind="stable")]
    seen: dict[tuple[str, str], list] = {}
    for end, model, outcome in zip(a["end"][failed].tolist(), a["model"][failed].tolist(),
                                   a["outcome"][failed].tolist()):
        name = run.request_name.get(run.records.models[model], run.records.models[model])
        row = seen.get((name, outcome))
        if row is None:
            seen[(name, outcome)] = [request_type, name, OUTCOMES[outcome], 1, end, end]
        else:
            row[3] += 1
            row[5] = end

    def locust_key(row):
        return hashlib.sha256(f"{row[0]}.{row[1]}.{row[2]!r}".encode()).hexdigest()

    rows = sorted(seen.values(), key=locust_key)
    return [[m, n, e, c, utc_timestamp(epoch + first), utc_timestamp(epoch + last)]
            for m, n, e, c, first, last in rows]


# -- writers --------------------------------------------------------------------------------

def _writer(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("w", newline="")
    return fh, csv.writer(fh)   # csv's default dialect: "\r\n" line ends, as Locust writes


def write_stats(run: Run, path: str | Path, request_type: str = DEFAULT_REQUEST_TYPE,
                rows: Sequence[Sequence] | None = None) -> Path:
    path = Path(path)
    fh, w = _writer(path)
    with fh:
        w.writerow(STATS_COLUMNS)
        w.writerows(rows if rows is not None else stats_rows(run, request_type))
    return path


def write_failures(run: Run, path: str | Path, request_type: str = DEFAULT_REQUEST_TYPE,
                   epoch: float = 0.0) -> Path:
    path = Path(path)
    fh, w = _writer(path)
    with fh:
        w.writerow(FAILURES_COLUMNS)
        w.writerows(failure_rows(run, request_type, epoch))
    return path


def _history_cell(column: str, value):
    if value is None:
        return "N/A"
    if column in _RATE_COLUMNS and isinstance(value, (int, float)):
        return f"{value:2f}"
    if column in _INT_COLUMNS and isinstance(value, float):
        return int(value)
    return value


def write_stats_history(rows: Iterable[Mapping], path: str | Path) -> Path:
    """Write row dicts keyed by Locust column names in Locust's column order.

    None becomes "N/A"; Requests/s and Failures/s get Locust's six decimals and percentiles
    are truncated to int, as Locust writes them. Extra keys are
    ignored; a missing column is an error naming the row."""
    path = Path(path)
    fh, w = _writer(path)
    with fh:
        w.writerow(HISTORY_COLUMNS)
        for i, row in enumerate(rows):
            missing = [c for c in HISTORY_COLUMNS if c not in row]
            if missing:
                raise ConfigError(f"history row {i} lacks column(s) {', '.join(map(repr, missing))}",
                                  source=str(path))
            w.writerow([_history_cell(c, row[c]) for c in HISTORY_COLUMNS])
    return path


HistorySource = Iterable[Mapping] | Callable[[Run], Iterable[Mapping]] | None


def write_locust_csv(run: Run, prefix: str | Path, *, history: HistorySource = None,
                     request_type: str = DEFAULT_REQUEST_TYPE, epoch: float = 0.0) -> dict[str, Path]:
    """Write ``<prefix>_stats.csv``, ``_stats_history.csv`` and ``_failures.csv`` for a run.

    ``history`` is a list of row dicts, a function of the run, or None for Locust's own
    rows computed from the run's records (``mmesim.results.locust``): then the history is
    streamed to its file as it is computed and the stats come from the same pass."""
    prefix = str(prefix)
    files = {}
    if history is None:
        stats, rows = locust.stream(run, request_type)
        files["stats_history"] = write_stats_history(rows, prefix + "_stats_history.csv")
        files["stats"] = write_stats(run, prefix + "_stats.csv", rows=stats.stats_rows())
    else:
        rows = history(run) if callable(history) else history
        files["stats_history"] = write_stats_history(rows, prefix + "_stats_history.csv")
        files["stats"] = write_stats(run, prefix + "_stats.csv", request_type)
    files["failures"] = write_failures(run, prefix + "_failures.csv", request_type, epoch)
    return {k: files[k] for k in ("stats", "stats_history", "failures")}


# -- readers --------------------------------------------------------------------------------

def _number(text: str, path: Path, line: int, column: str):
    if text == "N/A":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ConfigError("expected a number or N/A", source=f"{path}:{line}", field=column, value=text) from None
    if math.isnan(value):
        raise ConfigError("expected a number or N/A", source=f"{path}:{line}", field=column, value=text)
    return value


def _read(path: str | Path, required: Sequence[str]) -> list[dict]:
    """Parse a Locust CSV: text columns stay text, others become int/float, "N/A" becomes None."""
    path = Path(path)
    try:
        fh = path.open(newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ConfigError("empty file, expected a Locust CSV header", source=f"{path}:1")
        missing = [c for c in required if c not in header]
        if missing:
            raise ConfigError(f"header lacks Locust column(s) {', '.join(map(repr, missing))}",
                              source=f"{path}:1")
        rows = []
        for cells in reader:
            line = reader.line_num
            if not cells:
                continue
            if len(cells) != len(header):
                raise ConfigError(f"{len(cells)} values for {len(header)} columns", source=f"{path}:{line}")
            rows.append({col: (text if col in _TEXT_COLUMNS else _number(text, path, line, col))
                         for col, text in zip(header, cells)})
        return rows


def read_stats_history(path: str | Path) -> list[dict]:
    """Rows of a real (or our) ``_stats_history.csv``, numbers as numbers, "N/A" as None.

    Accepts any percentile set Locust was configured with; requires the core columns."""
    return _read(path, [c for c in HISTORY_COLUMNS if c not in PERCENTILE_COLUMNS])


def read_stats(path: str | Path) -> list[dict]:
    """Rows of a ``_stats.csv`` (per name, then Aggregated)."""
    return _read(path, [c for c in STATS_COLUMNS if c not in PERCENTILE_COLUMNS])


def read_failures(path: str | Path) -> list[dict]:
    """Rows of a ``_failures.csv``; First/Last Seen are absent in Locust before 2.3x."""
    return _read(path, FAILURES_COLUMNS[:4])


_AWS_CODE = re.compile(r"An error occurred \((\w+)\)")


def failure_cause(error: str) -> str:
    """Map a Locust Error cell to one of our outcome names where we can tell.

    Our own files hold the cause already; a measured boto3 run holds the exception's repr,
    e.g. "ClientError('An error occurred (ServiceUnavailable) when calling ...')"."""
    if error in OUTCOMES:
        return error
    m = _AWS_CODE.search(error)
    if m:
        return m.group(1)
    if "ReadTimeout" in error:
        return TIMEOUT
    return error
