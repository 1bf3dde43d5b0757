"""mmesim's Locust arithmetic against a REAL Locust run.

Locust (headless, ~10 s, 8 users, --csv --csv-full-history) calls a tiny local HTTP server
with known delays, some answered 503; its locustfile records each request as Locust logged
it. The same requests, fed in the same order to ``mmesim.results.locust.LocustStats``, must
give Locust's _stats.csv and every _stats_history.csv row (bar User Count, which is the
load shape's business); mmesim's readers parse the real files into the same numbers.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mmesim.results.locust import LocustStats
from mmesim.results.locust_csv import HISTORY_COLUMNS, STATS_COLUMNS, _history_cell, read_stats, read_stats_history

LOCUSTFILE = Path(__file__).with_name("locust_http_user.py")


class Delays(BaseHTTPRequestHandler):
    """/a: 5-30 ms; /b: 40-260 ms, every 7th a 503."""

    protocol_version = "HTTP/1.1"
    rng = random.Random(4)
    lock = threading.Lock()
    b_calls = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        with Delays.lock:
            delay = Delays.rng.uniform(0.005, 0.030) if self.path == "/a" else Delays.rng.uniform(0.040, 0.260)
            if self.path == "/b":
                Delays.b_calls += 1
            fail = self.path == "/b" and Delays.b_calls % 7 == 0
        time.sleep(delay)
        self.send_response(503 if fail else 200)
        self.send_header("Content-Length", "0")     # the blog's boto3 user reports 0 bytes too
        self.end_headers()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass                                         # Locust resets connections when it stops


@pytest.fixture(scope="module")
def locust_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("locust")
    httpd = Server(("127.0.0.1", 0), Delays)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        env = dict(os.environ, MMESIM_RECORDS=str(out / "records.json"))
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "8", "-r", "8", "-t", "10s",
             "--host", f"http://127.0.0.1:{httpd.server_address[1]}", "--csv", str(out / "real"),
             "--csv-full-history", "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"],
            env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    return out, json.loads((out / "records.json").read_text())


def read(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_stats_and_every_history_row_equal_real_locusts(locust_run):
    out, captured = locust_run
    recs = captured["records"]
    assert len(recs) > 300 and 10 < sum(r["failed"] for r in recs) < len(recs) / 5
    origin = math.floor(captured["start_time"])
    names = sorted({r["name"] for r in recs})
    ends = [r["t"] - origin for r in recs]
    assert ends == sorted(ends)                          # Locust logged them in this order
    split = [r for r in recs if math.floor(r["t_entry"]) != math.floor(r["t"])]
    if split:       # Locust reads the clock for the aggregate, then again for the entry
        pytest.skip(f"Locust logged {len(split)} request(s) in one second for the aggregate, the next for its entry")
    stats = LocustStats(names, request_type="GET", start_s=captured["start_time"] - origin)
    stats.feed(ends, [r["ms"] for r in recs], [names.index(r["name"]) for r in recs], [r["failed"] for r in recs])
    moved = 0

    def count_failures_where_locust_did(n: int) -> None:
        """Locust counts a failure in the second of its own clock read, microseconds after the
        request's: across a second's edge that is the next second. Move those of the first ``n``
        requests that crossed it there too (mmesim counts a failure in its request's second)."""
        nonlocal moved
        for r in recs[moved:n]:
            if r["failed"]:
                s = math.floor(r["t"]) - origin
                for entry, fail_s in zip((stats.entries[names.index(r["name"])], stats.total), r["fail_s"]):
                    if fail_s - origin != s:
                        entry.fail_per_sec[s] -= 1
                        entry.fail_per_sec[fail_s - origin] = entry.fail_per_sec.get(fail_s - origin, 0) + 1
        moved = max(moved, n)

    header, *real_rows = read(out / "real_stats_history.csv")
    assert header == list(HISTORY_COLUMNS)
    writes, current = [], []
    for row in real_rows:                 # one write: a row per entry, then the Aggregated row
        current.append(row)
        if row[3] == "Aggregated":
            writes.append(current)
            current = []
    parsed = iter(read_stats_history(out / "real_stats_history.csv"))    # the reader, on a real file
    compared = 0
    skip = HISTORY_COLUMNS.index("User Count")
    for rows in writes:
        ts = int(rows[-1][0])
        n = int(rows[-1][HISTORY_COLUMNS.index("Total Request Count")])
        stats.log_through(ends[n - 1] if n else -1.0)
        assert stats.total.num_requests == n
        count_failures_where_locust_did(n)
        dicts = stats.row(ts - origin)
        for d in dicts:
            back = next(parsed)
            assert {c: back[c] for c in HISTORY_COLUMNS[skip + 1:]} == \
                   {c: pytest.approx(d[c], abs=5e-7) if c in ("Requests/s", "Failures/s") else d[c]
                    for c in HISTORY_COLUMNS[skip + 1:]}
        mine = [[str(_history_cell(c, row[c])) for c in HISTORY_COLUMNS] for row in dicts]
        for m in mine:
            m[0] = str(int(m[0]) + origin)
        assert len(mine) == len(rows)
        for m, r in zip(mine, rows):
            assert m[:skip] + m[skip + 1:] == r[:skip] + r[skip + 1:], (ts - origin, m, r)
        compared += 1
    assert compared >= 8

    header, *real = read(out / "real_stats.csv")
    assert header == list(STATS_COLUMNS)
    assert [r["Request Count"] for r in read_stats(out / "real_stats.csv")] == [int(r[2]) for r in real]
    n = int(real[-1][STATS_COLUMNS.index("Request Count")])   # requests logged when Locust wrote it
    assert stats.total.num_requests <= n <= len(recs)
    stats.log_through(ends[n - 1])
    rps = {STATS_COLUMNS.index("Requests/s"), STATS_COLUMNS.index("Failures/s")}
    mine = [[str(c) for c in row] for row in stats.stats_rows()]
    assert [r[:2] for r in mine] == [r[:2] for r in real] == [["GET", "a"], ["GET", "b"], ["", "Aggregated"]]
    for m, r in zip(mine, real):
        assert [c for i, c in enumerate(m) if i not in rps] == [c for i, c in enumerate(r) if i not in rps]
        for i in rps:
            assert float(m[i]) == pytest.approx(float(r[i]), rel=1e-9)
