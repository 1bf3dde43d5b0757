"""One Summary code path: Locust history semantics and the reference's four metrics,
checked against values worked out by hand."""

import pytest

from mmesim.results.records import OK, OVERLOADED, Records, RequestRecord, Run
from mmesim.results.summary import history, reference_metrics, step_table, summarize


def tiny_run():
    """15 requests, one a second, each taking 500 ms; request 12 fails. 20 users until
    t=8, then 40."""
    recs = Records()
    for k in range(15):
        recs.add(RequestRecord(float(k), k + 0.5, "m-v0", 0, OVERLOADED if k == 12 else OK, False))
    return Run(records=recs, duration_s=16, users=[(0.0, 0), (0.0, 20), (8.0, 40)], user_steps=[20, 40],
               request_name={"m-v0": "m"}, instance_type="ml.g4dn.2xlarge", price_usd_per_hour=0.94)


def test_history_follows_locust_semantics():
    all_rows = history(tiny_run())
    total = [r for r in all_rows if r["Name"] == "Aggregated"]
    assert [r["Timestamp"] for r in total] == list(range(17))
    assert total[0]["Total Request Count"] == 0 and total[0]["50%"] is None     # written "N/A"
    # Locust creates a name's entry at its first request (logged at 0.5), so its rows start at t=1
    rows = [r for r in all_rows if r["Name"] == "m"]
    assert [r["Timestamp"] for r in rows] == list(range(1, 17))
    # a request is logged when it completes: k + 0.5
    assert [r["Total Request Count"] for r in rows] == [min(t, 15) for t in range(1, 17)]
    # Requests/s: the whole seconds from (last - 12) to (last - 2), exclusive
    assert [r["Requests/s"] for r in rows[:4]] == [0, 0, 0, 1.0]
    assert all(r["Requests/s"] == 1.0 for r in rows[3:])
    assert all(r["Total Average Response Time"] == pytest.approx(500.0) for r in rows)
    assert [r["Total Failure Count"] for r in rows] == [0] * 12 + [1] * 4
    assert [r["User Count"] for r in rows] == [20] * 7 + [40] * 9
    assert rows[-1]["50%"] == 500     # over the last 10 s, Locust-bucketed


def test_reference_metrics_by_hand():
    m = reference_metrics(history(tiny_run()), [20, 40])
    s20, s40 = m["steps"]
    # rows of "m" with 20 users: t = 1..7 (none at t=0: Locust had no entry for it yet);
    # Requests/s there is 0, 0, 0, then 1 from t=4 (seconds 0.. logged, ending 2 s back)
    assert s20 == {"users": 20, "rps": pytest.approx(4 / 7), "avg_ms": pytest.approx(500.0), "requests": 7,
                   "failures": 0}
    assert s40["failures"] == 1 and s40["requests"] == 8 and s40["rps"] == 1.0
    assert m["latency_ms"] == pytest.approx(500.0)
    assert m["throughput_qps"] == pytest.approx(4 / 7)
    assert m["max_concurrent_users"] == 20


def test_summary_counts_and_cost():
    s = summarize(tiny_run())
    assert s.requests == 15 and s.failures == 1
    assert s.failures_by_cause == {"ServiceUnavailable": 1}
    assert s.p50_ms == pytest.approx(500.0)
    assert s.cost_per_hour_usd == 0.94
    assert s.cost_per_million_usd == pytest.approx(0.94 / (4 / 7 * 3600) * 1e6)
    steps = {r["users"]: r for r in step_table(tiny_run())}
    assert steps[20]["requests"] == 8 and steps[40]["requests"] == 7 and steps[40]["failures"] == 1
    assert steps[20]["rps"] == pytest.approx(1.0)


def test_summary_percentiles_are_exact_not_bucketed():
    """p50/p95/p99 of the Summary interpolate the unrounded times (mmesim.results.locust says
    so); Locust's bucketed rule would give 150 ms for all three here."""
    recs = Records()
    for k, ms in enumerate((144.0, 146.0, 148.0, 152.0)):
        recs.add(RequestRecord(float(k), k + ms / 1000, "m-v0", 0, OK, False))
    s = summarize(Run(records=recs, duration_s=5, users=[(0.0, 1)]))
    assert s.p50_ms == pytest.approx(147.0)
    assert s.p99_ms == pytest.approx(148.0 + 0.97 * 4.0)


def test_a_request_logged_before_its_users_belongs_to_the_first_step():
    """Locust logs the user count once its users have started: the first requests (a fresh
    copy's slow first executions) can precede the count by milliseconds. They count in the
    first step, not in a step of 0 users nobody asked for; requests after the last users
    stopped count nowhere."""
    recs = Records()
    for k, (t, ms) in enumerate(((0.000, 60.0), (0.005, 55.0), (1.0, 5.0), (2.0, 5.0), (3.0, 5.0), (4.5, 5.0))):
        recs.add(RequestRecord(t, t + ms / 1000, f"m-v{k % 2}", 0, OK, False))
    run = Run(records=recs, duration_s=5, users=[(0.0, 0), (0.02, 2), (2.5, 4), (4.0, 0)], user_steps=[2, 4])
    steps = {r["users"]: r for r in step_table(run)}
    assert steps[2]["requests"] == 4 and steps[4]["requests"] == 1
    assert steps[2]["p99_ms"] > 55.0
