"""Locust's statistics, reproduced: the one place mmesim does Locust's arithmetic.

Locust (2.x, ``locust/stats.py``) keeps, per request name and for the "Aggregated" total, a
histogram of response times bucketed to about two significant digits, counts per second,
and a snapshot of the histogram at each new second. From these it writes ``_stats.csv``
(cumulative figures) and, with ``--csv-full-history``, one ``_stats_history.csv`` row per
entry every second, whose percentiles cover about the last 10 s (the histogram now minus
the snapshot of ~10 s ago) and whose Requests/s averages whole seconds ending 2 s before
the last request. ``LocustStats`` does the same, fed requests in completion order, so its
rows equal Locust's for the same requests; it keeps only the histograms and ~20 s of
snapshots, so a run of any length streams through it in linear time.

Percentile definitions in mmesim (the one place that says which is which):
- Locust-format outputs (history rows, ``_stats.csv``) and the Summary's reference metrics
  use Locust's rule: ``response_time_percentile`` over the bucketed histogram.
- The Summary's own p50/p95/p99 (whole run, and per user step) are exact: numpy's linear
  interpolation over the unrounded response times of successful requests (``exact_percentile``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

# What the blog's boto3 Locust user passes as request_type (locust/locust_benchmark_sm.py).
DEFAULT_REQUEST_TYPE = "InvokeEndpoint"
AGGREGATED = "Aggregated"
PERCENTILES = (0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)
WINDOW_S = 10           # CURRENT_RESPONSE_TIME_PERCENTILE_WINDOW


def percentile_label(p: float) -> str:
    """Column title Locust gives a percentile: 0.5 -> '50%', 0.999 -> '99.9%'."""
    pct = p * 100
    return f"{int(pct) if pct.is_integer() else round(pct, 6)}%"


PERCENTILE_COLUMNS = tuple(percentile_label(p) for p in PERCENTILES)


def exact_percentile(values_ms, q: float) -> float | None:
    """The Summary's percentile: exact, numpy's linear interpolation; None without samples."""
    return float(np.percentile(values_ms, q)) if len(values_ms) else None


# -- buckets and the percentile rule --------------------------------------------------------

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


def bucket_keys(ms: np.ndarray) -> np.ndarray:
    """``bucket_response_time`` of many values at once, equal to it value for value (ties,
    where numpy's scaled rounding could differ from Python's exact one, go through Python)."""
    ms = np.asarray(ms, dtype=np.float64)
    step = np.where(ms < 100, 1.0, np.where(ms < 1000, 10.0, np.where(ms < 10000, 100.0, 1000.0)))
    scaled = ms / step
    keys = (np.rint(scaled) * step).astype(np.int64)
    near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    for i in np.flatnonzero(near_tie):
        keys[i] = bucket_response_time(float(ms[i]))
    return keys


def bucket_index(keys: np.ndarray) -> np.ndarray:
    """Dense, order-keeping index of bucket keys: 0-99 ms by 1, to 1 s by 10, to 10 s by 100, then by 1000."""
    k = np.asarray(keys, dtype=np.int64)
    return np.where(k < 100, k, np.where(k < 1000, 100 + (k - 100) // 10,
                                         np.where(k < 10000, 190 + (k - 1000) // 100, 280 + (k - 10000) // 1000)))


def index_key(idx: np.ndarray) -> np.ndarray:
    """The bucket key (ms) of each index: the inverse of ``bucket_index``."""
    i = np.asarray(idx, dtype=np.int64)
    return np.where(i < 100, i, np.where(i < 190, 100 + (i - 100) * 10,
                                         np.where(i < 280, 1000 + (i - 190) * 100, 10000 + (i - 280) * 1000)))


def histogram_percentiles(hist: np.ndarray, count: int, percents: Sequence[float] = PERCENTILES) -> list[int]:
    """``response_time_percentile`` of a dense histogram, for several percents in one pass:
    the slowest non-empty bucket with at most ``int(count * p)`` requests below it."""
    nz = np.flatnonzero(hist)
    if not len(nz):
        return [0] * len(percents)
    below = np.cumsum(hist[nz]) - hist[nz]          # requests below each non-empty bucket
    keep = np.array([int(count * p) for p in percents])
    pos = np.searchsorted(below, keep, side="right") - 1
    keys = index_key(nz[np.maximum(pos, 0)])
    return [int(k) if p >= 0 else 0 for k, p in zip(keys.tolist(), pos.tolist())]


# -- entries --------------------------------------------------------------------------------

class Entry:
    """One Locust ``StatsEntry`` (a request name, or the aggregate), fed in completion order
    so float sums match Locust's bit for bit."""

    def __init__(self, method: str, name: str, created_s: int = 0, history: bool = True, histogram: bool = True):
        self.method, self.name = method, name
        self.histogram = histogram or history     # without it: no median or percentiles (cheaper)
        self.num_requests = self.num_failures = 0
        self.total_ms = 0.0
        self.min_ms: float | None = None
        self.max_ms: float = 0
        self.hist = np.zeros(400, dtype=np.int64)
        self.last_second: int | None = None
        self.per_sec: dict[int, int] = {}
        self.fail_per_sec: dict[int, int] = {}
        # Locust snapshots the histogram at creation, then before the first request of each
        # new second (key: that second - 1); the current percentiles diff against one of them.
        self.history = history
        self.cache: dict[int, tuple[int, np.ndarray | None]] = {created_s: (0, None)} if history else {}

    def log(self, second: int, ms: np.ndarray, idx: np.ndarray, failed: np.ndarray) -> None:
        """Requests logged during ``second`` (ms in completion order, bucket indexes, failed flags)."""
        n = len(ms)
        if not n:
            return
        if self.history and self.last_second is not None and second > self.last_second:
            self.cache[second - 1] = (self.num_requests, self.hist.copy())
            for old in [k for k in self.cache if k < second - WINDOW_S - 10]:
                del self.cache[old]
        self.last_second = second
        self.num_requests += n
        nf = int(np.count_nonzero(failed))
        self.num_failures += nf
        # one at a time, in order (accumulate is sequential): the same float sum as Locust's
        if n < 32:
            values = ms.tolist()
            total = self.total_ms
            for v in values:
                total += v
            self.total_ms = total
            lo, hi = min(values), max(values)
        else:
            self.total_ms = float(np.add.accumulate(np.concatenate(([self.total_ms], ms)))[-1])
            lo, hi = float(ms.min()), float(ms.max())
        self.min_ms = lo if self.min_ms is None else min(self.min_ms, lo)
        self.max_ms = max(self.max_ms, hi)
        if not self.histogram:
            pass
        elif n < 32:
            hist = self.hist
            for i in idx.tolist():
                if i >= len(hist):
                    hist = self.hist = np.concatenate([hist, np.zeros(i + 1 - len(hist) + 64, dtype=np.int64)])
                hist[i] += 1
        else:
            top = int(idx.max())
            if top >= len(self.hist):
                self.hist = np.concatenate([self.hist, np.zeros(top + 1 - len(self.hist) + 64, dtype=np.int64)])
            self.hist[: top + 1] += np.bincount(idx, minlength=top + 1)
        self.per_sec[second] = self.per_sec.get(second, 0) + n
        if nf:
            self.fail_per_sec[second] = self.fail_per_sec.get(second, 0) + nf
        for old in [k for k in self.per_sec if k < second - 14]:
            del self.per_sec[old]
            self.fail_per_sec.pop(old, None)

    @property
    def avg_ms(self) -> float:
        return self.total_ms / max(self.num_requests, 1)

    @property
    def median_ms(self) -> float:
        """Locust clamps the bucketed median into [min, max] so one slow request can't exceed max."""
        if not self.num_requests:
            return 0
        median = histogram_percentiles(self.hist, self.num_requests, (0.5,))[0]
        if median > self.max_ms:
            return self.max_ms
        if self.min_ms is not None and median < self.min_ms:
            return self.min_ms
        return median

    def percentiles(self) -> list:
        """Cumulative percentiles, as ``_stats.csv`` has them ("N/A" before any request)."""
        if not self.num_requests:
            return ["N/A"] * len(PERCENTILES)
        return histogram_percentiles(self.hist, self.num_requests)

    def current_percentiles(self, now_s: int) -> list:
        """Percentiles of about the last 10 s, as Locust's history rows have them: against the
        snapshot of now-10 s, else the nearest of now-11, now-9, ... now-18, now-2; 0 without one."""
        if not self.num_requests:
            return [None] * len(PERCENTILES)
        for k in (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8):
            snap = self.cache.get(now_s - WINDOW_S - k)
            if snap is not None:
                count, hist = snap
                window = self.hist if hist is None else self.hist - np.pad(hist, (0, len(self.hist) - len(hist)))
                return histogram_percentiles(window, self.num_requests - count)
        return [0] * len(PERCENTILES)

    def current_rate(self, last_s: int | None, start_s: int = 0) -> tuple[float, float]:
        """Requests/s and failures/s: whole seconds from (last - 12) to (last - 2), exclusive,
        where ``last`` is the second of the run's last logged request."""
        if last_s is None:
            return 0.0, 0.0
        secs = range(max(last_s - 12, start_s), last_s - 2)
        width = max(len(secs), 1)
        per, fails = self.per_sec.get, self.fail_per_sec.get
        return sum(per(s, 0) for s in secs) / width, sum(fails(s, 0) for s in secs) / width

    def stats_row(self, elapsed_s: float) -> list:
        """A ``_stats.csv`` row; rates are per second of ``elapsed_s`` (Locust: the stats'
        start to the last request)."""
        rps = self.num_requests / elapsed_s if elapsed_s > 0 else 0.0
        fps = self.num_failures / elapsed_s if elapsed_s > 0 else 0.0
        content = 0.0 if self.num_requests else 0   # the boto3 user reports response_length 0
        return [self.method, self.name, self.num_requests, self.num_failures, self.median_ms, self.avg_ms,
                self.min_ms or 0, self.max_ms, content, rps, fps, *self.percentiles()]


class LocustStats:
    """Locust's ``RequestStats`` for requests fed in completion order, with its history rows.

    ``names[g]`` is the request name of group ``g``; ``feed`` takes requests sorted by end
    time (seconds since the run began), ``rows_until(t)`` logs those that ended by ``t`` and
    returns the history rows of each whole second up to ``t``. Memory: the histograms and
    ~20 s of snapshots per entry, whatever the run's length."""

    def __init__(self, names: Sequence[str], request_type: str = DEFAULT_REQUEST_TYPE,
                 percentiles: bool = True, users: Callable[[int], int] | None = None, start_s: float = 0.0,
                 histograms: bool = True):
        self.names, self.request_type, self.percentiles = list(names), request_type, percentiles
        self.histograms = histograms or percentiles    # False: no medians or percentiles anywhere (cheaper)
        self.users = users or (lambda t: 0)
        self.start_s = start_s          # when the stats began (Locust: the test's start), same clock as ends
        self.total = Entry("", AGGREGATED, int(math.floor(start_s)), history=percentiles, histogram=self.histograms)
        self.entries: dict[int, Entry] = {}       # group -> entry, created at its first request
        self.last_end: float | None = None
        self.next_row = 0
        self._cols = (np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                      np.zeros(0, dtype=bool))    # buffered end, ms, bucket index, group, failed
        self._next = 0                            # first buffered request not logged yet

    def feed(self, end, ms, group, failed) -> None:
        end = np.asarray(end, dtype=np.float64)
        if not len(end):
            return
        ms = np.asarray(ms, dtype=np.float64)
        idx = bucket_index(bucket_keys(ms)) if self.histograms else np.zeros(len(ms), dtype=np.int64)
        new = (end, ms, idx, np.asarray(group, dtype=np.int64), np.asarray(failed, dtype=bool))
        self._cols = tuple(np.concatenate([old[self._next:], add]) for old, add in zip(self._cols, new))
        self._next = 0

    def log_through(self, t: float) -> None:
        """Log buffered requests that ended by ``t``, a second at a time."""
        end_all = self._cols[0]
        lo = self._next
        hi = int(np.searchsorted(end_all, t, side="right"))
        if hi <= lo:
            return
        end, ms, idx, grp, failed = (c[lo:hi] for c in self._cols)
        sec = np.floor(end).astype(np.int64)
        cuts = np.flatnonzero(np.diff(sec)) + 1
        single = len(self.names) == 1
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), hi - lo]):
            s = int(sec[a])
            g = grp[a:b]
            for gi in ([int(g[0])] if single else np.unique(g).tolist()):
                entry = self.entries.get(gi)
                if entry is None:
                    entry = self.entries[gi] = Entry(self.request_type, self.names[gi], s, history=self.percentiles,
                                                     histogram=self.histograms)
                if single:
                    entry.log(s, ms[a:b], idx[a:b], failed[a:b])
                else:
                    m = g == gi
                    entry.log(s, ms[a:b][m], idx[a:b][m], failed[a:b][m])
            self.total.log(s, ms[a:b], idx[a:b], failed[a:b])
        self.last_end = float(end[-1])
        self._next = hi

    def sorted_entries(self) -> list[Entry]:
        """Per-name entries sorted as Locust sorts them, then the aggregate."""
        return sorted(self.entries.values(), key=lambda e: e.name) + [self.total]

    def rows_until(self, t: int) -> list[dict[str, Any]]:
        """History rows for each whole second from the last one written to ``t``."""
        rows: list[dict[str, Any]] = []
        while self.next_row <= t:
            now = self.next_row
            self.log_through(now)
            rows.extend(self.row(now))
            self.next_row += 1
        return rows

    def finish(self, until: float) -> None:
        """Log what ended by ``until`` (the run's end; later requests Locust never logs)."""
        self.log_through(until)

    def row(self, now: int) -> list[dict[str, Any]]:
        """One history row per entry, as Locust writes them at ``now`` (whole seconds)."""
        last = None if self.last_end is None else int(math.floor(self.last_end))
        users = self.users(now)
        out = []
        for e in self.sorted_entries():
            n = e.num_requests
            rps, fps = e.current_rate(last, int(math.floor(self.start_s)))
            row = {"Timestamp": now, "User Count": users, "Type": e.method, "Name": e.name,
                   "Requests/s": rps, "Failures/s": fps}
            if self.percentiles:
                row.update(zip(PERCENTILE_COLUMNS, e.current_percentiles(now)))
            row.update({"Total Request Count": n, "Total Failure Count": e.num_failures})
            if self.percentiles:
                row["Total Median Response Time"] = e.median_ms
            row.update({"Total Average Response Time": e.avg_ms, "Total Min Response Time": e.min_ms or 0,
                        "Total Max Response Time": e.max_ms, "Total Average Content Size": 0.0 if n else 0})
            out.append(row)
        return out

    def stats_rows(self) -> list[list]:
        """``_stats.csv`` rows (without header) for what has been logged."""
        elapsed = (self.last_end - self.start_s) if self.last_end is not None else 0.0
        return [e.stats_row(elapsed) for e in self.sorted_entries()]


# -- a Run through Locust's stats -----------------------------------------------------------

def _names(run) -> tuple[list[str], np.ndarray]:
    """Request names (sorted) and each target model's group index."""
    names = [run.request_name.get(m, m) for m in run.records.models]
    uniq = sorted(set(names))
    return uniq, np.array([uniq.index(n) for n in names], dtype=np.int64)


def _users(run) -> Callable[[int], int]:
    times = np.array([t for t, _ in run.users] or [0.0])
    counts = [u for _, u in run.users] or [0]
    return lambda t: int(counts[max(int(np.searchsorted(times, t, side="right")) - 1, 0)])


def _chunks(run, chunk_s: float) -> Iterator[tuple[float, dict[str, np.ndarray]]]:
    """The run's records in completion order, a time slice at a time: (slice end, columns)."""
    a = run.records.arrays()
    order = np.argsort(a["end"], kind="stable")
    end = a["end"][order]
    t, i = 0.0, 0
    while i < len(end) or t == 0.0:
        t += chunk_s
        j = int(np.searchsorted(end, t, side="right"))
        sel = order[i:j]
        yield t, {k: v[sel] for k, v in a.items()}
        i = j


def stream(run, request_type: str = DEFAULT_REQUEST_TYPE, percentiles: bool = True,
           chunk_s: float = 300.0, histograms: bool = True) -> tuple[LocustStats, Iterator[dict[str, Any]]]:
    """Locust's stats over a Run: the LocustStats and an iterator of its history rows (one
    per entry and whole second up to the run's duration). The stats are final once the rows
    are consumed; records go through in ``chunk_s`` slices."""
    names, group_of = _names(run)
    stats = LocustStats(names, request_type, percentiles, _users(run), histograms=histograms)
    seconds = int(math.floor(run.duration_s))

    def rows() -> Iterator[dict[str, Any]]:
        for t, c in _chunks(run, chunk_s):
            stats.feed(c["end"], (c["end"] - c["start"]) * 1000.0, group_of[c["model"]], c["outcome"] != 0)
            yield from stats.rows_until(min(int(math.floor(t)) - 1, seconds))
            if t > run.duration_s + 1:
                break
        yield from stats.rows_until(seconds)
        stats.finish(run.duration_s)

    return stats, rows()


def history(run, percentiles: bool = True, request_type: str = DEFAULT_REQUEST_TYPE) -> list[dict[str, Any]]:
    """Locust ``--csv-full-history`` rows for a Run: for every whole second, one row per
    request name seen so far and one "Aggregated" row, keyed by Locust 2.x column names.
    Without ``percentiles`` the percentile and median columns are left out (cheaper)."""
    _, rows = stream(run, request_type, percentiles, histograms=percentiles)
    return list(rows)


def stats(run, request_type: str = DEFAULT_REQUEST_TYPE) -> LocustStats:
    """The final Locust stats of a Run (requests that ended by its duration), without history rows."""
    names, group_of = _names(run)
    s = LocustStats(names, request_type, percentiles=False)
    for t, c in _chunks(run, 300.0):
        s.feed(c["end"], (c["end"] - c["start"]) * 1000.0, group_of[c["model"]], c["outcome"] != 0)
        s.finish(min(t, run.duration_s))
        if t > run.duration_s:
            break
    return s

