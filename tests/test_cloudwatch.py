"""CloudWatch series on a tiny hand-built run: every number below is computed by hand."""

import csv

import pytest

from mmesim.errors import ConfigError
from mmesim.results import cloudwatch as cw
from mmesim.results.records import (MODEL_NOT_READY, OK, OVERLOADED, TIMEOUT, ModelEvent, Records,
                                    RequestRecord, Run)


def tiny_run() -> Run:
    recs = Records()
    for r in [RequestRecord(0.0, 10.0, "m1", 0, OK, True),            # cold: waits for load ending at 5
              RequestRecord(20.0, 20.5, "m1", 0, OK, False),
              RequestRecord(30.0, 90.0, "m2", 1, MODEL_NOT_READY, True),  # 429 at 90; its load ends at 105
              RequestRecord(61.0, 62.0, "m1", 0, OK, False),
              RequestRecord(70.0, 71.0, "m1", -1, OVERLOADED, False),  # shed before an instance: no cache sample
              RequestRecord(80.0, 81.0, "m1", 0, TIMEOUT, False)]:
        recs.add(r)
    events = [ModelEvent(0.0, 0, "m1", "download", 1.0), ModelEvent(1.0, 0, "m1", "load", 4.0),
              ModelEvent(35.0, 1, "m2", "load", 70.0), ModelEvent(100.0, 0, "m1", "unload", 2.0)]
    memory = [(0.0, 0, 100), (5.0, 0, 500), (30.0, 1, 200)]
    return Run(records=recs, duration_s=120.0, instance_count=2, events=events, memory=memory, gpu_total_bytes=1000)


def stat(points, metric, period, statistic):
    (value,) = [d.value for d in points if (d.metric, d.period_start_s, d.statistic) == (metric, period, statistic)]
    return value


def test_request_metrics_by_hand():
    s = cw.series(tiny_run())
    assert s["Invocations"] == [(0, 2.0), (60, 4.0)]
    assert s["InvocationsPerInstance"] == [(0, 1.0), (60, 2.0)]          # 1/2 per request, two instances
    assert s["Invocation4XXErrors"] == [(0, 0.0), (60, 2.0)]             # 429 and InvocationTimeout (424)
    assert s["Invocation5XXErrors"] == [(0, 0.0), (60, 1.0)]             # 503
    assert s["ModelCacheHit"] == [(0, 1.0), (60, 2.0)]
    assert s["ModelLatency"] == [(0, 5.25e6), (60, 1e6)]                 # microseconds, ok requests only
    assert s["ModelLoadingWaitTime"] == [(0, 5e6), (60, 60e6)]           # 5 - 0; min(105, 90) - 30


def test_rates_and_other_statistics():
    p = cw.datapoints(tiny_run())
    assert stat(p, "ModelCacheHit", 60, "Average") == pytest.approx(2 / 3)
    assert stat(p, "Invocation4XXErrors", 60, "Average") == 0.5
    assert stat(p, "Invocation5XXErrors", 60, "Average") == 0.25
    assert stat(p, "ModelLatency", 0, "Maximum") == 10e6
    assert stat(p, "ModelLatency", 0, "Minimum") == 0.5e6
    assert stat(p, "ModelLatency", 0, "SampleCount") == 2


def test_event_metrics_stamped_when_the_move_completes():
    s = cw.series(tiny_run())
    assert s["ModelDownloadingTime"] == [(0, 1e6)]
    assert s["ModelLoadingTime"] == [(0, 4e6), (60, 70e6)]              # second load ends at 105
    assert s["ModelUnloadingTime"] == [(60, 2e6)]


def test_loaded_model_count_per_instance_at_period_end():
    assert cw.loaded_models(tiny_run().events) == {0: [(5.0, 1), (102.0, 0)], 1: [(105.0, 1)]}
    p = cw.datapoints(tiny_run())
    assert [stat(p, "LoadedModelCount", t, "Sum") for t in (0, 60)] == [1.0, 1.0]
    assert [stat(p, "LoadedModelCount", t, "Average") for t in (0, 60)] == [0.5, 0.5]
    assert stat(p, "LoadedModelCount", 60, "Minimum") == 0.0


def test_gpu_memory_utilization_sampled_each_second():
    p = cw.datapoints(tiny_run())
    # period 0: inst0 5 s at 10% + 55 s at 50%; inst1 30 s at 20% (no sample before t=30)
    assert stat(p, "GPUMemoryUtilization", 0, "Average") == pytest.approx(3400 / 90)
    assert stat(p, "GPUMemoryUtilization", 0, "Maximum") == 50.0
    assert stat(p, "GPUMemoryUtilization", 0, "Minimum") == 10.0
    assert stat(p, "GPUMemoryUtilization", 60, "Average") == pytest.approx(35.0)


def test_overhead_splits_model_latency():
    s = cw.series(tiny_run(), overhead_s=[0.5, 0.1, 0.0, 0.25, 0.0, 0.0])
    assert s["ModelLatency"][0] == (0, pytest.approx(4.95e6))
    assert s["OverheadLatency"] == [(0, pytest.approx(0.3e6)), (60, 0.25e6)]
    with pytest.raises(ConfigError, match="one value per record"):
        cw.series(tiny_run(), overhead_s=[0.1])


def test_absent_data_is_skipped_not_invented():
    run = tiny_run()
    run.events, run.memory = [], []
    s = cw.series(run)
    for absent in ("LoadedModelCount", "GPUMemoryUtilization", "ModelLoadingTime", "ModelLoadingWaitTime",
                   "OverheadLatency", "GPUUtilization", "CPUUtilization"):
        assert absent not in s
    assert s["Invocations"] == [(0, 2.0), (60, 4.0)]


def test_period_without_requests_has_no_datapoint():
    run = tiny_run()
    s = cw.series(run, period_s=30)
    assert [t for t, _ in s["Invocations"]] == [0, 60, 90]    # nothing ended in [30, 60)
    with pytest.raises(ConfigError, match="period_s"):
        cw.series(run, period_s=0)


def test_csv_long_format(tmp_path):
    path = cw.write_csv(tiny_run(), tmp_path / "cw.csv")
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == list(cw.CSV_COLUMNS)
    assert rows[0] == {"metric": "Invocations", "period_start_s": "0", "statistic": "Sum", "value": "2.0", "unit": "None"}
    lat = [r for r in rows if r["metric"] == "ModelLatency" and r["statistic"] == "Average"]
    assert [(r["period_start_s"], float(r["value"]), r["unit"]) for r in lat] == [("0", 5.25e6, "Microseconds"),
                                                                                 ("60", 1e6, "Microseconds")]
    assert len(rows) == len(cw.datapoints(tiny_run()))


def test_cloudwatch_counts_the_platform_figures_the_summary_has():
    """What a live run takes from CloudWatch (a load test cannot see it): the misses in
    ModelCacheHit and the samples of ModelLoadingTime/ModelUnloadingTime count the cold
    starts, loads and unloads of the same run."""
    from conftest import make_profile
    from mmesim.endpoint import EndpointConfig
    from mmesim.results.cloudwatch import datapoints, platform_counts
    from mmesim.results.summary import observed, summarize
    from mmesim.sim import simulate
    from mmesim.workload import Workload
    p = make_profile(mem_mib=4000, load_s=1.0, unload_s=0.2)
    wl = Workload(kind="users", wait_s=[0.05, 0.2], user_steps=[4], stages=[{"end_s": 120, "users": 4, "spawn_rate": 4}])
    run = simulate([p], EndpointConfig(instance_type="ml.g4dn.xlarge"), wl, copies=[6], seed=1, warm=False)
    s = summarize(run)
    assert s.unloads > 0 and s.cold_starts >= s.loads >= s.unloads        # churn: 3 of 6 copies fit
    counts = platform_counts(datapoints(run))
    assert counts == {"cold_starts": s.cold_starts, "loads": s.loads, "unloads": s.unloads}
    assert platform_counts([]) == {}                                         # nothing reported: nothing known
    unseen = s.model_copy(update={"cold_starts": None, "loads": None, "unloads": None, "sources": {}})
    seen = observed(unseen, counts, "cloudwatch")
    assert (seen.loads, seen.sources["loads"], seen.sources["cold_starts"]) == (s.loads, "cloudwatch", "cloudwatch")
