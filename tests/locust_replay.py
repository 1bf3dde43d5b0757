"""Replay request records through REAL Locust's stats code on a stand-in clock (child process).

Reads JSON on stdin: {"origin": unix s, "method": ..., "requests": [[end_s, ms, name, error|null], ...]
in completion order, "rows": [t, ...]}; logs each request as Locust's request event would
(log_request, then log_error) with time.time() = origin + end, writes Locust's own history
rows at origin + t for each t, then its _stats.csv and _failures.csv rows. Prints JSON
{"history": [...], "stats": [...], "failures": [...]} (rows as lists of CSV cells).

Used by tests (importing locust patches the interpreter with gevent, so never in pytest itself).
"""

import csv
import io
import json
import sys
import types

import locust.stats as ls

ask = json.load(sys.stdin)
clock = [float(ask["origin"])]
ls.time = types.SimpleNamespace(time=lambda: clock[0])     # the only clock locust.stats reads

stats = ls.RequestStats(use_response_times_cache=True)
env = types.SimpleNamespace(stats=stats, runner=None)
writer = ls.StatsCSV(env, ls.PERCENTILES_TO_REPORT)
writer.full_history = True


def cells(fn, *args):
    buf = io.StringIO()
    fn(writer, csv.writer(buf), *args)
    return list(csv.reader(io.StringIO(buf.getvalue())))


history = []
pending = list(ask["requests"])
i = 0
for t in ask["rows"]:
    while i < len(pending) and pending[i][0] <= t:
        end, ms, name, error = pending[i]
        clock[0] = ask["origin"] + end
        stats.log_request(ask["method"], name, ms, 0)
        if error is not None:
            stats.log_error(ask["method"], name, error)
        i += 1
    clock[0] = ask["origin"] + t
    history += cells(ls.StatsCSVFileWriter._stats_history_data_rows, clock[0])
for end, ms, name, error in pending[i:]:
    clock[0] = ask["origin"] + end
    stats.log_request(ask["method"], name, ms, 0)
    if error is not None:
        stats.log_error(ask["method"], name, error)
json.dump({"history": history, "stats": cells(ls.StatsCSV._requests_data_rows),
           "failures": cells(ls.StatsCSV._failures_data_rows)}, sys.stdout)
