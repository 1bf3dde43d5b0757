"""Sweeps: the same rows on local processes, a Dask LocalCluster and a `dask scheduler` +
`dask worker` started as real processes on loopback; one table, one self-contained report."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmesim.cli import main
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.plan.partition import simulate_partitioned
from mmesim.plan.sweep import SweepBase, parse_params, sweep, write_sweep
from mmesim.profile import load_profile
from mmesim.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = {"name": "short", "kind": "poisson", "rates": [{"end_s": 20, "rate": 30}], "popularity": {"kind": "zipf"}}
GRID = ["instance_count=1,2", "seed=0,1"]


@pytest.fixture
def base(tmp_path):
    wl = tmp_path / "short.yaml"
    wl.write_text(yaml.safe_dump(WORKLOAD))
    return SweepBase.from_cli(["bert-base-uncased-tensorrt-t4"], "ml.g4dn.xlarge", None, str(wl), "6", 0)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def dask_processes(tmp_path):
    """`dask scheduler` and one `dask worker` on 127.0.0.1, stopped by PID afterwards."""
    dask = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--dashboard-address", "127.0.0.1:0",        # its HTTP routes: loopback too
                                       "--scheduler-file", str(sched_file)], env=_env(), cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        address = None
        while address is None and time.monotonic() < deadline:
            try:                              # the scheduler writes it in place: wait for a whole one
                address = json.loads(sched_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        assert address, f"the Dask scheduler wrote no address to {sched_file} in 60 s"
        procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--dashboard-address", "127.0.0.1:0", "--host", "127.0.0.1"], env=_env(), cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_local_localcluster_and_dask_processes_give_identical_rows(base, dask_processes, tmp_path):
    from distributed import LocalCluster

    grid = parse_params(GRID)
    local = sweep(base, grid, workers=2, quiet=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        on_local_cluster = sweep(base, grid, cluster=cluster.scheduler_address, quiet=True)
        import psutil                      # scheduler (here), workers and dashboard: loopback only
        me = psutil.Process()
        bound = {c.laddr.ip for p in (me, *me.children(recursive=True)) for c in p.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN}
        assert bound <= {"127.0.0.1", "::1"}, bound
    on_processes = sweep(base, grid, cluster=dask_processes, quiet=True)
    assert local == on_local_cluster == on_processes
    assert [(r["instance_count"], r["seed"]) for r in local] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert local[0]["p95_ms"] != local[1]["p95_ms"]          # the seed is used
    # a partitioned endpoint merges to the same records wherever its partitions ran
    ep = EndpointConfig(instance_type="ml.g4dn.xlarge", instance_count=2)
    wl = Workload(**WORKLOAD)
    profiles = [load_profile("bert-base-uncased-tensorrt-t4")]
    here = simulate_partitioned(profiles, ep, wl, [8], seed=3, workers=2, quiet=True).records.arrays()
    there = simulate_partitioned(profiles, ep, wl, [8], seed=3, cluster=dask_processes, quiet=True).records.arrays()
    assert len(here["start"]) > 500
    for col in here:
        assert np.array_equal(here[col], there[col])


def test_sweep_cli_writes_one_table_and_a_self_contained_report(tmp_path, capsys):
    wl = tmp_path / "short.yaml"
    wl.write_text(yaml.safe_dump(WORKLOAD))
    out = tmp_path / "out"
    rc = main(["sweep", "--profile", "bert-base-uncased-tensorrt-t4", "--instance", "ml.g4dn.xlarge",
               "--workload", str(wl), "--copies", "6", "--workers", "1", "--out", str(out),
               "workload.rates.0.rate=10,60", "memory_threshold=0.9"])
    assert rc == 0
    import csv
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 and float(rows[1]["requests"]) > 3 * float(rows[0]["requests"])
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="http' not in html
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pytest.skip("pyarrow does not import here (the [plan] extra pins one that does): Parquet not checked")
    assert pq.read_table(out / "results.parquet").num_rows == 2


def test_a_bad_sweep_parameter_is_named(base):
    with pytest.raises(ConfigError, match="field 'colour'"):
        sweep(base, parse_params(["colour=red"]), workers=1, quiet=True)
    with pytest.raises(ConfigError, match="sweep memory_threshold=1.5.*memory_threshold"):
        sweep(base, parse_params(["memory_threshold=0.9,1.5"]), workers=1, quiet=True)
