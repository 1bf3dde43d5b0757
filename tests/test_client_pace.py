"""The load generator's CPU by its pace: a Locust process that idles between requests spends
more on each than a busy one, and spends CPU every second whatever it sends. The model, the
simulator's charge, and the arithmetic that makes a generator from the probes' readings (the
real probes run against Triton in test_loadtest_fast.py)."""

import pytest
from pydantic import ValidationError

from mmesim.loadtest.probe import ClientReading, client_generator, process_idle_s
from mmesim.results.records import RequestRecord
from mmesim.workload import LoadGenerator, Workload
from test_sharing import cpu_model, run_local, two_cores  # noqa: F401 - the fixture


def test_the_curve_is_sorted_and_scales_the_reference():
    gen = LoadGenerator(cpu_s_per_request=0.0006, timed_share=0.5,
                        by_idle=[{"idle_s": 0.25, "cpu_s_per_request": 0.0009, "timed_share": 0.9},
                                 {"idle_s": 0.001, "cpu_s_per_request": 0.0003}])
    assert [p.idle_s for p in gen.by_idle] == [0.001, 0.25]
    # (timed part over the generator's 0.3 ms, CPU after the answer); the busy end at the generator's share
    assert gen.paced(0.0) == pytest.approx((0.5, 0.00015)) and gen.paced(10.0) == pytest.approx((2.7, 0.00009))
    halfway = gen.paced(0.25 ** 0.5 * 0.001 ** 0.5)                # halfway in log idle: 0.6 ms, 70 % timed
    assert halfway == pytest.approx((0.0006 * 0.7 / 0.0003, 0.0006 * 0.3))
    assert LoadGenerator(cpu_s_per_request=0.001, timed_share=0.4).paced(0.0) == pytest.approx((1.0, 0.0006))
    with pytest.raises(ValidationError, match="repeat"):
        LoadGenerator(cpu_s_per_request=0.001, by_idle=[{"idle_s": 0.1, "cpu_s_per_request": 0.001}] * 2)
    with pytest.raises(ValidationError, match="cpu_s_per_request, which is 0"):
        LoadGenerator(by_idle=[{"idle_s": 0.1, "cpu_s_per_request": 0.001}])


PACED = {"workers": 1, "cpu_s_per_request": 0.1,
         "by_idle": [{"idle_s": 0.02, "cpu_s_per_request": 0.02}, {"idle_s": 0.2, "cpu_s_per_request": 0.1}]}


@pytest.mark.parametrize("on_host", [False, True])
def test_a_busy_client_spends_less_per_request(tmp_path, two_cores, on_host):
    """A 100 ms model, one user, a client spending 20 ms a request right after an answer and
    100 ms after 200 ms of idle: with no wait every request but the first (the process was
    idle before it) costs 20 ms; with 300 ms waits every one costs 100 ms."""
    latency, busy = {}, {}
    for wait in (0.0, 0.3):
        wl = Workload(stages=[{"end_s": 10, "users": 1, "spawn_rate": 1}], wait_s=(wait, wait),
                      generator={**PACED, "on_host": on_host})
        run = run_local([cpu_model()], [1], wl, 10, overhead_s=0.0)
        latency[wait] = [r.end - r.start for r in sorted(run.records, key=lambda r: r.start) if r.ok]
        busy[wait] = sum(run.generator_busy_s), len(run.records)
    assert latency[0.0][0] == pytest.approx(0.2, abs=1e-3)
    assert all(x == pytest.approx(0.12, abs=1e-3) for x in latency[0.0][1:-1])
    assert all(x == pytest.approx(0.2, abs=1e-3) for x in latency[0.3][:-1])
    (spent, n), (slow_spent, slow_n) = busy[0.0], busy[0.3]
    # the records' requests and perhaps one more, sent and unanswered at the end
    assert 0.1 + 0.02 * (n - 1) - 1e-9 <= spent <= 0.1 + 0.02 * n + 1e-9
    assert 0.1 * slow_n - 1e-9 <= slow_spent <= 0.1 * (slow_n + 1) + 1e-9


def test_the_part_after_the_answer_is_charged_at_its_requests_pace(tmp_path, two_cores):
    """Half the client's CPU after the answer, at the pace of the request it follows: a
    cycle settles at 10 ms timed + 100 ms model + 10 ms after (the next request's idle is
    those 10 ms: the curve's flat busy end), where a flat 100 ms client's holds 50 + 100 + 50."""
    cycles = {}
    for name, gen in (("paced", PACED), ("flat", {"workers": 1, "cpu_s_per_request": 0.1})):
        wl = Workload(stages=[{"end_s": 10, "users": 1, "spawn_rate": 1}], wait_s=(0, 0),
                      generator={**gen, "timed_share": 0.5})
        starts = sorted(r.start for r in run_local([cpu_model()], [1], wl, 10, overhead_s=0.0).records)
        cycles[name] = [b - a for a, b in zip(starts, starts[1:])]
    assert all(c == pytest.approx(0.2, rel=1e-4) for c in cycles["flat"])
    # the first cycles are slower: each recording's idle is the one before it, 50 ms, then less
    assert cycles["paced"][0] == pytest.approx(0.2, rel=1e-4) and cycles["paced"][1] > cycles["paced"][-1]
    assert cycles["paced"][-1] == pytest.approx(0.12, rel=0.01)


def test_the_process_spends_its_background_each_second(tmp_path, two_cores):
    """300 ms of the process's own work each second, off the host: a user with no wait gets
    about 30 % fewer requests through, and the process's busy time holds 9 ticks of it."""
    counts = {}
    for background in (0.0, 0.3):
        wl = Workload(stages=[{"end_s": 10, "users": 1, "spawn_rate": 1}], wait_s=(0, 0),
                      generator={"workers": 1, "cpu_s_per_request": 0.001, "background_cpu_s_per_s": background})
        run = run_local([cpu_model()], [1], wl, 10, overhead_s=0.0)
        counts[background] = len(run.records)
        assert sum(run.generator_busy_s) == pytest.approx(0.001 * len(run.records) + 9 * background, abs=0.002)
    assert counts[0.3] / counts[0.0] == pytest.approx(0.7, abs=0.05)


def reading(requests, wall, per_request, background, timed_per_request=0.0, idle=None, excess=0.0):
    return ClientReading(requests=requests, cpu_s=requests * per_request + background * wall, wall_s=wall,
                         timed_cpu_s=requests * timed_per_request, idle_s=idle, wait_excess_s=excess)


def test_the_probes_readings_split_into_background_and_requests_by_pace():
    """Readings made from a known client (12 ms a second; 0.8 ms a request after long
    pauses, 0.5 after 6 ms, 0.3 after 1 ms) give that client back, with the share inside
    the timer each one-at-a-time probe read (the busy one's timers overlap: the warm share)."""
    b = 0.012
    warm = reading(1200, 10.0, 0.0005, b, timed_per_request=0.0004, idle=0.006, excess=0.0007)
    gen = client_generator(warm, cold=reading(66, 16.0, 0.0008, b, timed_per_request=0.0006, idle=0.24),
                           busy=reading(5600, 8.0, 0.0003, b, timed_per_request=0.0009, idle=0.001),
                           still=reading(6, 12.0, 0.0008, b, idle=2.0))
    assert gen.background_cpu_s_per_s == pytest.approx(b)
    assert [(p.idle_s, p.cpu_s_per_request, p.timed_share) for p in gen.by_idle] == [
        (0.001, pytest.approx(0.0003), None), (0.006, pytest.approx(0.0005), pytest.approx(0.8)),
        (0.24, pytest.approx(0.0008), pytest.approx(0.75))]
    assert gen.cpu_s_per_request == pytest.approx(0.0005) and gen.timed_share == pytest.approx(0.8)
    # the user's 0.7 ms from answer to next request beyond its wait, less its 0.1 ms after the answer
    assert gen.wait_slack_s == pytest.approx(0.0006)
    assert gen.on_host and gen.paced(0.001) == pytest.approx((0.6, 0.00006))


def test_a_request_costs_at_least_its_timer_and_more_after_a_longer_pause():
    """A cold reading whose CPU less the background comes out below its own timers' CPU is
    held at that; one below the warm reading at the warm figure."""
    b = 0.012
    warm = reading(1200, 10.0, 0.0005, b, timed_per_request=0.0004, idle=0.006)
    still = reading(6, 12.0, 0.0003, b, idle=2.0)
    cold = {"timer": reading(66, 16.0, 0.0003, b, timed_per_request=0.0007, idle=0.24),
            "warm": reading(66, 16.0, 0.0003, b, timed_per_request=0.0001, idle=0.24)}
    for floor, expect in (("timer", (0.0007, 1.0)), ("warm", (0.0005, 0.2))):
        gen = client_generator(warm, cold=cold[floor], busy=reading(5600, 8.0, 0.0003, b, idle=0.001), still=still)
        assert (gen.by_idle[-1].cpu_s_per_request, gen.by_idle[-1].timed_share) == pytest.approx(expect)


def test_a_process_idles_from_its_last_request_sent_or_answer_received():
    rec = [RequestRecord(start=s, end=e, model="m", instance=-1, outcome="ok", cold=False) for s, e in
           ((0.0, 0.010), (0.005, 0.012), (0.020, 0.030), (0.031, 0.040))]
    # before the 2nd: 5 ms since the 1st was sent; the 3rd: 8 ms since an answer; the 4th: 1 ms
    assert process_idle_s(rec) == pytest.approx(0.005)
    assert process_idle_s(rec[:1]) is None
