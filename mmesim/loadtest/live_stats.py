"""Locust's own numbers while it runs: the latest "Aggregated" row of the ``_stats_history.csv``
it appends to each second (``--csv-full-history``), read from the file's tail so a long test
costs the same to watch at the end as at the start."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LiveStats:
    users: int
    rps: float               # Locust's current requests/s (its moving window)
    requests: int            # total so far
    failures: int            # total so far


def latest(path: Path, tail_bytes: int = 65536) -> LiveStats | None:
    """The last complete Aggregated row written so far, or None before Locust has written one."""
    try:
        with path.open("rb") as fh:
            header = next(csv.reader([fh.readline().decode("utf-8", "replace")]), [])
            size = fh.seek(0, 2)
            start = fh.seek(max(0, size - tail_bytes))
            data = fh.read()
    except FileNotFoundError:
        return None
    col = {name: i for i, name in enumerate(header)}
    if any(n not in col for n in ("User Count", "Name", "Requests/s", "Total Request Count", "Total Failure Count")):
        return None
    lines = data.decode("utf-8", "replace").split("\n")
    lines = lines[1 if start else 0:-1]          # a line cut by the seek, and one still being written
    for row in csv.reader(reversed(lines)):
        if len(row) == len(header) and row[col["Name"]] == "Aggregated":
            try:
                return LiveStats(int(row[col["User Count"]]), float(row[col["Requests/s"]]),
                                 int(row[col["Total Request Count"]]), int(row[col["Total Failure Count"]]))
            except ValueError:
                continue
    return None
