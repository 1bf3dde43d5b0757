"""mmesim's Locust-format files against Locust's own code.

1. Replay: a seeded simulated run's requests go through REAL Locust's stats classes (on a
   stand-in clock, in a child process: tests/locust_replay.py); every history row, the
   _stats.csv rows and the _failures.csv rows must equal what mmesim's fast, streaming
   writer produced from the same records.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_profile
from mmesim.endpoint import EndpointConfig
from mmesim.results import locust_csv as L
from mmesim.results.records import OUTCOMES
from mmesim.sim import simulate
from mmesim.workload import Workload

ORIGIN = 1_700_000_000          # a whole unix second, so Locust's seconds line up with the run's
REPLAY = Path(__file__).with_name("locust_replay.py")


def locust_replay(run, method: str) -> dict:
    a = run.records.arrays()
    order = np.argsort(a["end"], kind="stable")
    requests = []
    for i in order.tolist():
        end = float(a["end"][i])
        if end > run.duration_s:
            continue
        model = run.records.models[a["model"][i]]
        outcome = OUTCOMES[a["outcome"][i]]
        requests.append([end, (end - float(a["start"][i])) * 1000.0, run.request_name.get(model, model),
                         None if outcome == "ok" else outcome])
    ask = {"origin": ORIGIN, "method": method, "requests": requests,
           "rows": list(range(int(math.floor(run.duration_s)) + 1))}
    out = subprocess.run([sys.executable, str(REPLAY)], input=json.dumps(ask), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def cells(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))[1:]


@pytest.fixture(scope="module")
def seeded_run():
    """Two request names, a busy minute, a sparse gap (so Locust's 10 s snapshot is missing
    and it falls back to neighbours or to 0), then overload with 503s."""
    a, b = make_profile(name="a", mem_mib=100, cv=0.4), make_profile(name="b", mem_mib=100, s1=0.03, cv=0.4)
    wl = Workload(kind="poisson", rates=[{"end_s": 60, "rate": 40}, {"end_s": 95, "rate": 0.15},
                                         {"end_s": 130, "rate": 150}])
    run = simulate([a, b], EndpointConfig(instance_type="ml.g4dn.2xlarge", max_inflight_per_instance=3), wl,
                   copies=[3, 2], seed=11)
    run.users = []              # Locust replayed without a runner reports 0 users
    return run


def test_fast_writer_equals_locusts_own_code(seeded_run, tmp_path):
    run = seeded_run
    assert 4000 < len(run.records) and 100 < sum(not r.ok for r in run.records)
    locust = locust_replay(run, "InvokeEndpoint")
    files = L.write_locust_csv(run, tmp_path / "p", epoch=ORIGIN)

    ours = cells(files["stats_history"])
    theirs = [[str(int(r[0]) - ORIGIN), *r[1:]] for r in locust["history"]]
    assert len(ours) == len(theirs) > 3 * 130
    for mine, real in zip(ours, theirs):
        assert mine == real

    rate_cols = {L.STATS_COLUMNS.index("Requests/s"), L.STATS_COLUMNS.index("Failures/s")}
    ours, theirs = cells(files["stats"]), locust["stats"]
    assert [r[:2] for r in ours] == [r[:2] for r in theirs] == [["InvokeEndpoint", "a"], ["InvokeEndpoint", "b"],
                                                                ["", "Aggregated"]]
    for mine, real in zip(ours, theirs):
        assert [c for i, c in enumerate(mine) if i not in rate_cols] == \
               [c for i, c in enumerate(real) if i not in rate_cols]
        for i in rate_cols:    # Locust divides by (origin + last end) - origin: equal to ~1e-12
            assert float(mine[i]) == pytest.approx(float(real[i]), rel=1e-9)

    assert cells(files["failures"]) == locust["failures"]
