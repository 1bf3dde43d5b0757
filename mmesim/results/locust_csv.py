"""Locust-format CSV files: write them for a Run, read them from a real load test.

A prediction written as ``<prefix>_stats.csv``, ``<prefix>_stats_history.csv`` and
``<prefix>_failures.csv`` reads like Locust 2.x output (``--csv PREFIX --csv-full-history``),
so the blog's notebooks and any other Locust tooling read predictions unchanged; the readers
turn a measured run's files into the same row dicts the summary code consumes.

Locust's arithmetic is reproduced, not approximated: response times are kept in ms, bucketed
to about two significant digits (``bucket_response_time``), and percentiles use Locust's
counting rule (``response_time_percentile``), so a percentile here equals Locust's to the ms.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from mmesim.errors import ConfigError, MmesimError
from mmesim.results.records import OK, OUTCOMES, TIMEOUT, Run

# What the blog's boto3 Locust user passes as request_type (locust/locust_benchmark_sm.py).
DEFAULT_REQUEST_TYPE = "InvokeEndpoint"
AGGREGATED = "Aggregated"
PERCENTILES = (0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)


def percentile_label(p: float) -> str:
    """Column title Locust gives a percentile: 0.5 -> '50%', 0.999 -> '99.9%'."""
    pct = p * 100
    return f"{int(pct) if pct.is_integer() else round(pct, 6)}%"


PERCENTILE_COLUMNS = tuple(percentile_label(p) for p in PERCENTILES)
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


# -- Locust's arithmetic --------------------------------------------------------------------

def bucket_response_time(ms: float) -> int:
    """Locust's histogram key: ms rounded to ~2 significant digits (147 -> 150, 3432 -> 3400)."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


def response_time_percentile(buckets: Mapping[int, int], count: int, percent: float) -> int:
    """Locust's percentile: walk buckets from the slowest down until at most
    ``int(count * percent)`` requests are left below; 0 when there are no samples."""
    keep = int(count * percent)
    seen = 0
    for key in sorted(buckets, reverse=True):
        seen += buckets[key]
        if count - seen <= keep:
            return key
    return 0


class Entry:
    """One Locust stats entry (a request name, or the aggregate) built from finished requests.

    Fed in completion order, as Locust logs them, so float sums match Locust's bit for bit."""

    def __init__(self, method: str, name: str):
        self.method, self.name = method, name
        self.num_requests = self.num_failures = 0
        self.total_ms = 0.0
        self.min_ms: float | None = None
        self.max_ms: float = 0
        self.buckets: Counter[int] = Counter()

    def log(self, ms: float, failed: bool) -> None:
        self.num_requests += 1
        self.num_failures += failed
        self.total_ms += ms
        self.min_ms = ms if self.min_ms is None else min(self.min_ms, ms)
        self.max_ms = max(self.max_ms, ms)
        self.buckets[bucket_response_time(ms)] += 1

    @property
    def avg_ms(self) -> float:
        return self.total_ms / self.num_requests if self.num_requests else 0.0

    @property
    def median_ms(self) -> float:
        """Locust clamps the bucketed median into [min, max] so one slow request can't exceed max."""
        if not self.buckets:
            return 0
        median = response_time_percentile(self.buckets, self.num_requests, 0.5) or 0
        if median > self.max_ms:
            return self.max_ms
        if self.min_ms is not None and median < self.min_ms:
            return self.min_ms
        return median

    def percentiles(self) -> list:
        if not self.num_requests:
            return ["N/A"] * len(PERCENTILES)
        return [int(response_time_percentile(self.buckets, self.num_requests, p) or 0) for p in PERCENTILES]

    def stats_row(self, elapsed_s: float) -> list:
        """A ``_stats.csv`` row; rates are per second of ``elapsed_s`` (Locust: first request
        timestamp of the stats object to the last request)."""
        rps = self.num_requests / elapsed_s if elapsed_s > 0 else 0.0
        fps = self.num_failures / elapsed_s if elapsed_s > 0 else 0.0
        content = 0.0 if self.num_requests else 0   # the boto3 user reports response_length 0
        return [self.method, self.name, self.num_requests, self.num_failures, self.median_ms, self.avg_ms,
                self.min_ms or 0, self.max_ms, content, rps, fps, *self.percentiles()]


def request_name(run: Run, model: str) -> str:
    """The Locust request name for a target model (the blog names requests by base model)."""
    return run.request_name.get(model, model)


def _finished(run: Run) -> list[tuple[float, float, str, str]]:
    """(end, start, name, outcome) in completion order, the order Locust logs requests in.

    Requests still in flight at ``duration_s`` are left out: Locust stops its users there and
    never logs them."""
    recs = [(r.end, r.start, request_name(run, r.model), r.outcome) for r in run.records
            if r.end <= run.duration_s]
    recs.sort(key=lambda x: x[0])
    return recs


def stats_entries(run: Run, request_type: str = DEFAULT_REQUEST_TYPE) -> list[Entry]:
    """Per-name entries sorted as Locust sorts them, then the Aggregated entry."""
    by_name: dict[str, Entry] = {}
    total = Entry("", AGGREGATED)
    for end, start, name, outcome in _finished(run):
        ms = (end - start) * 1000.0
        entry = by_name.get(name) or by_name.setdefault(name, Entry(request_type, name))
        entry.log(ms, outcome != OK)
        total.log(ms, outcome != OK)
    return [by_name[n] for n in sorted(by_name)] + [total]


def stats_rows(run: Run, request_type: str = DEFAULT_REQUEST_TYPE) -> list[list]:
    """Rows of ``_stats.csv`` (without header). The run starts at t=0, so Locust's
    Requests/s = count / (last completion time)."""
    last = max(run.records.end, default=0.0)
    return [e.stats_row(last) for e in stats_entries(run, request_type)]


def utc_timestamp(unix_s: float) -> str:
    """Locust's First/Last Seen format."""
    return datetime.fromtimestamp(int(unix_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def failure_rows(run: Run, request_type: str = DEFAULT_REQUEST_TYPE, epoch: float = 0.0) -> list[list]:
    """Rows of ``_failures.csv``: one per (name, cause). ``epoch`` is the unix time of t=0.

    Ordered like Locust orders them (by the sha256 key of method, name and error), which
    looks arbitrary but makes our file byte-comparable with Locust's."""
    seen: dict[tuple[str, str], list] = {}
    for end, _start, name, outcome in _finished(run):
        if outcome == OK:
            continue
        row = seen.get((name, outcome))
        if row is None:
            seen[(name, outcome)] = [request_type, name, outcome, 1, end, end]
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


def write_stats(run: Run, path: str | Path, request_type: str = DEFAULT_REQUEST_TYPE) -> Path:
    path = Path(path)
    fh, w = _writer(path)
    with fh:
        w.writerow(STATS_COLUMNS)
        w.writerows(stats_rows(run, request_type))
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


def _history_rows(run: Run, history: HistorySource, request_type: str) -> Iterable[Mapping]:
    if callable(history):
        return history(run)
    if history is not None:
        return history
    try:
        from mmesim.results.summary import history as summary_history
    except ImportError as exc:
        raise MmesimError("no history rows given and mmesim.results.summary.history is not "
                          f"available ({exc}); pass history=rows or a function") from None
    return summary_history(run, request_type=request_type)


def write_locust_csv(run: Run, prefix: str | Path, *, history: HistorySource = None,
                     request_type: str = DEFAULT_REQUEST_TYPE, epoch: float = 0.0) -> dict[str, Path]:
    """Write ``<prefix>_stats.csv``, ``_stats_history.csv`` and ``_failures.csv`` for a run.

    ``history`` is a list of row dicts, a function of the run, or None for
    ``mmesim.results.summary.history`` (given the same ``request_type``, so the files agree)."""
    prefix = str(prefix)
    return {
        "stats": write_stats(run, prefix + "_stats.csv", request_type),
        "stats_history": write_stats_history(_history_rows(run, history, request_type), prefix + "_stats_history.csv"),
        "failures": write_failures(run, prefix + "_failures.csv", request_type, epoch),
    }


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
