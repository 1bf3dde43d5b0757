"""The light load generator (``--client fast``: Locust's FastHttpUser) against a real Triton,
and the shared-cores prediction of instance type local held against a measurement there."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import loaded_copies

from mmesim.calibrate.placement import measure_placement
from mmesim.cli import main
from mmesim.endpoint import FAIR, EndpointConfig
from mmesim.loadtest import run_loadtest
from mmesim.loadtest.probe import cold_probe_workload, measure_client, measure_request_cost, retimed, wait_slack
from mmesim.loadtest.validate import validate
from mmesim.profile import Warmth, load_profile
from mmesim.report.console import placement_text
from mmesim.results.records import OK, RequestRecord
from mmesim.results.summary import summarize
from mmesim.serde import load
from mmesim.sim import simulate
from mmesim.units import GiB
from mmesim.workload import LoadGenerator, Workload

PROFILE = load_profile(Path(__file__).parent.parent / "calibration" / "profiles" / "tiny-bert-python-cpu.json")


@pytest.fixture(scope="module")
def triton(tmp_path_factory, triton_server):
    """tiny-bert x 2 (Python backend, one thread each) in the session's real Triton, SageMaker
    MME mode (unloaded afterwards)."""
    yield from loaded_copies(triton_server, tmp_path_factory.mktemp("triton"), "tiny-bert")


def steady(users=1, seconds=6.0, wait=(0.0, 0.01)):
    return Workload(kind="users", stages=[{"end_s": seconds, "users": users, "spawn_rate": 10}], wait_s=wait)


def locust_count(folder: Path) -> int:
    """The requests Locust's statistics had counted when the shape stopped the test (stop.json);
    its _stats.csv, rewritten once a second and not at the end, may be a second behind."""
    counted = json.loads((folder / "stop.json").read_text())["requests"]
    rows = {r["Name"]: r for r in csv.DictReader((folder / "locust_stats.csv").open())}
    assert 0 < int(rows["Aggregated"]["Request Count"]) <= counted
    return counted


@pytest.mark.triton
def test_fast_client_is_counted_and_costs_less_cpu_per_request(triton, tmp_path):
    runs = {c: run_loadtest(triton.sagemaker_url, None, steady(), [PROFILE], [2], tmp_path / c, protocol="triton",
                            client=c) for c in ("http", "fast")}
    fast = runs["fast"]
    assert len(fast.records) > 100 and all(r.ok for r in fast.records)
    assert {r.model for r in fast.records} == {"tiny-bert-v0", "tiny-bert-v1"}
    assert locust_count(tmp_path / "fast") == len(fast.records)       # Locust's statistics saw every request
    ratio = fast.generator_cpu_s_per_request / runs["http"].generator_cpu_s_per_request
    assert ratio < 0.75, f"fast client's CPU per request is {ratio:.2f} of the HttpUser's"
    # and a measurement's Summary keeps it, as Locust's processes spent it, to compare with a prediction's
    summary = summarize(fast)
    assert summary.client_cpu_ms_per_request == pytest.approx(1e3 * fast.generator_cpu_s_per_request)
    assert summary.sources["client_cpu_ms_per_request"] == "locust process"
    plan = json.loads((tmp_path / "fast" / "plan.json").read_text())
    assert plan["client"] == "fast"


@pytest.mark.triton
def test_fast_client_names_failures_like_the_http_client(triton, tmp_path):
    """Three copies targeted, two loaded: the third copy's requests fail alone, with the same
    outcome whichever client sent them."""
    outcomes = {}
    for c in ("http", "fast"):
        run = run_loadtest(triton.sagemaker_url, None, steady(users=2, seconds=4, wait=(0.02, 0.05)), [PROFILE], [3],
                           tmp_path / c, protocol="triton", client=c)
        bad = [r for r in run.records if r.model == "tiny-bert-v2"]
        assert bad and all(r.ok for r in run.records if r.model != "tiny-bert-v2")
        outcomes[c] = {r.outcome for r in bad}
    assert outcomes["fast"] == outcomes["http"] and OK not in outcomes["fast"]


@pytest.mark.triton
@pytest.mark.alone         # a prediction for this host's cores: other work on them falsifies the measurement
def test_shared_cores_prediction_lands_near_a_real_measurement(triton, tmp_path):
    """Short requests, 2 users, the client on the same 2 cores: the prediction from the CPU a
    request costs here (server, stub, hand-off: one probe at one user; the client at four
    paces) and the shared-cores model lands within generous bounds of the measured
    throughput and median."""
    cost = measure_request_cost(triton.sagemaker_url, triton.pid, PROFILE, 2, tmp_path / "probe", client="fast",
                                seconds=6, stats_url=triton.http_url)
    assert cost.requests > 100 and 0 < cost.client_timed_share <= 1
    assert cost.server_cpu_s > 0 and cost.stub_cpu_s > 0
    assert 0 < cost.server_idle_s <= cost.idle_s < 0.1           # waits of 0-10 ms, two copies in turn
    # and after long pauses, the warmth curves' cold end
    cold = measure_request_cost(triton.sagemaker_url, triton.pid, PROFILE, 2, tmp_path / "cold", client="fast",
                                workload=cold_probe_workload(6), stats_url=triton.http_url)
    assert cold.requests > 10 and 0.15 < cold.server_idle_s <= cold.idle_s
    assert 0 < cost.client_wait_slack_s < 0.005 and cost.generator().wait_slack_s == cost.client_wait_slack_s
    # the client by pace: busy (four users), the two probes', and what it spends each second
    paced = measure_client(triton.sagemaker_url, PROFILE, 2, tmp_path / "client", "fast", cost.client, cold.client,
                           seconds=4)
    busy, warm, far = paced.by_idle
    assert busy.idle_s < warm.idle_s < far.idle_s and busy.cpu_s_per_request < warm.cpu_s_per_request
    assert 0.001 < paced.background_cpu_s_per_s < 0.05 and paced.cpu_s_per_request < cost.client_cpu_s
    wl = steady(users=2, seconds=10).model_copy(update={"generator": paced, "user_steps": [2]})
    fair = EndpointConfig(instance_type="local", memory_budget_bytes=2 * GiB, host_wakeups=FAIR)   # processor sharing
    v = validate([retimed(PROFILE, cost, cold)], fair, wl,
                 [2], endpoint_url=triton.sagemaker_url, protocol="triton", client="fast", out=tmp_path / "v")
    fig = {x.figure: x for x in v.comparison.lines}
    assert fig["requests"].measured > 300 and fig["failures"].measured == 0
    assert fig["throughput"].predicted == pytest.approx(fig["throughput"].measured, rel=0.4)
    # generous: the probe and the run are a minute apart, and other people's work on this host
    # changes what a request costs meanwhile (docs/accuracy-this-machine.md, sections 5-7)
    assert fig["p50"].predicted == pytest.approx(fig["p50"].measured, rel=0.6)
    # the client's CPU per request at the run's pace: two busy users cost Locust less a request
    # than the one-user probe's figure, and so does the curve's charge, which lands near what
    # Locust spent (0.61 ms charged, 0.61 spent, 0.94 one-user on 2026-12-06 19:08 UTC; 0.43,
    # 0.61, 0.71 at 22:15: the client's own CPU moves 20-30 % between probes a minute apart)
    client = fig["client cpu ms per request"]
    one_user = summarize(simulate([retimed(PROFILE, cost, cold)], fair, wl.model_copy(
        update={"generator": cost.generator()}), copies=[2], seed=0)).client_cpu_ms_per_request
    assert client.predicted < one_user and client.predicted == pytest.approx(client.measured, rel=0.45)
    # Triton holds an execution longer than its stub computes (the Python backend's
    # hand-off), and the model keeps that wait: without it the same prediction is faster
    assert cost.handoff_s > 0.05 * cost.stub_cpu_s
    bare = retimed(PROFILE, cost, cold)
    bare = bare.model_copy(update={"handoff_s": 0.0, "host_warmth": [
        w.model_copy(update={"handoff_s": 0.0 if w.handoff_s is not None else None}) for w in bare.host_warmth]})
    without = summarize(simulate([bare], fair, wl, copies=[2], seed=0))
    assert without.p50_ms < fig["p50"].predicted - 0.5e3 * cost.handoff_s
    # this host's placement of woken threads, measured without Triton by the probe (a short run
    # of it): predicted with it, the same measurement's tail stands at least as near its median
    # (p95 / p50: what the placement models, whatever the costs' scale; docs/accuracy-this-machine.md, "The host's
    # placement, measured"; on a host that displaces no thread the two predictions are one)
    placed = measure_placement(chain_s=3.0, long_rounds=60, source="test")
    packed = validate([retimed(PROFILE, cost, cold)], EndpointConfig(instance_type="local", memory_budget_bytes=2 * GiB,
                                                               host_wakeups=placed),
                      wl, [2], measured=tmp_path / "v" / "measurement")
    pfig = {x.figure: x for x in packed.comparison.lines}
    print(f"p50/p95 measured {fig['p50'].measured:.2f}/{fig['p95'].measured:.2f} ms, predicted "
          f"{fig['p50'].predicted:.2f}/{fig['p95'].predicted:.2f} (processor sharing), "
          f"{pfig['p50'].predicted:.2f}/{pfig['p95'].predicted:.2f} ({placement_text(placed.model_dump())}); "
          f"client CPU per request {client.predicted:.2f} ms charged by "
          f"pace, {one_user:.2f} at the one-user probe's, {client.measured:.2f} spent")
    assert pfig["p95"].predicted >= fig["p95"].predicted or not placed.displaces
    spread = {name: f["p95"].predicted / f["p50"].predicted for name, f in (("fair", fig), ("placed", pfig))}
    measured = fig["p95"].measured / fig["p50"].measured
    assert abs(spread["placed"] - measured) <= abs(spread["fair"] - measured) + 0.05
    assert pfig["throughput"].predicted == pytest.approx(pfig["throughput"].measured, rel=0.4)


def test_fast_client_speaks_sagemakers_protocol_signed(tmp_path):
    """Against `mmesim emulate` (virtual backend): requests signed with SigV4 are served and
    counted as boto3's are, and a target the endpoint lacks fails with SageMaker's error code."""
    from conftest import make_profile
    from emulator_process import emulate, fake_artifacts
    profile = make_profile("tiny-mlp", load_s=0.1, s1=0.002)      # a built-in model: its inputs are known
    path = tmp_path / "tiny-mlp.json"
    profile.save(path)
    models = fake_artifacts(tmp_path / "models", ["tiny-mlp-v0", "tiny-mlp-v1"])
    outcomes = {}
    with emulate("--instance", "ml.g4dn.xlarge", "--models", str(models), "--profile", str(path)) as (url, _):
        for c in ("http", "fast"):
            run = run_loadtest(url, "mmesim", steady(users=2, seconds=4, wait=(0.02, 0.05)), [profile], [3],
                               tmp_path / c, protocol="sagemaker", client=c)
            good = [r for r in run.records if r.model != "tiny-mlp-v2"]
            assert len(good) > 20 and all(r.ok for r in good)
            outcomes[c] = {r.outcome for r in run.records if r.model == "tiny-mlp-v2"}
            assert locust_count(tmp_path / c) == len(run.records)
    assert outcomes["fast"] == outcomes["http"] and OK not in outcomes["fast"] and outcomes["fast"]


def test_wait_slack_is_one_users_gap_beyond_its_wait_and_untimed_cpu():
    """Requests of 2 ms, waits drawn from 0-10 ms, the next request 0.6 ms later than wait +
    0.1 ms of untimed CPU; one pause of a second (not the timer) is left out."""
    import random
    rng, t, records, waits = random.Random(1), 0.0, [], []
    for i in range(2000):
        records.append(RequestRecord(t, t + 0.002, "m", 0, OK, False))
        waits.append(rng.uniform(0, 0.01))
        t += 0.002 + waits[-1] + 0.0001 + 0.0006 + (1.0 if i == 700 else 0.0)
    kept = waits[:700] + waits[701:-1]                         # the waits of the gaps it keeps
    drawn = sum(kept) / len(kept) - 0.005                      # their mean, off the uniform's
    assert wait_slack(records, steady(users=1), 0.0001) == pytest.approx(0.0006 + drawn, abs=2e-6)
    assert wait_slack(records, steady(users=2), 0.0001) == 0.0      # whose gap is whose is unknown
    assert wait_slack(records[:10], steady(users=1), 0.0001) == 0.0


def test_retimed_divides_out_the_warmth_the_probe_ran_at():
    """The probe's executions each came 10 ms after their copy's previous request, where the
    profile says an execution takes twice its back-to-back time: the probe's 2 ms per execution
    is the profile's 1 ms, not a host twice as slow (the simulator applies the warmth itself)."""
    from conftest import make_profile
    from mmesim.loadtest.probe import RequestCost, over_pauses
    profile = make_profile(gpu="cpu", s1=0.001, max_batch=1,
                           host_warmth=[{"idle_s": 0.0, "factor": 1.0}, {"idle_s": 0.01, "factor": 2.0}])
    records, t = [], 0.0
    for i in range(40):                       # two copies in turn, each 10 ms after its previous end
        records.append(RequestRecord(t, t + 0.002, f"m-v{i % 2}", 0, OK, False))
        t += 0.006
    assert over_pauses(profile.warmth_factor, records) == pytest.approx(2.0)
    cost = RequestCost(requests=40, client_cpu_s=0.0003, client_timed_share=0.5, server_cpu_s=0.0004,
                       stub_cpu_s=0.002, handoff_s=0.0, client_wait_slack_s=0.0, others_cores=0.0, stub_warmth=2.0)
    assert retimed(profile, cost).service[0].seconds == pytest.approx(0.001)
    assert cost.execution_ratio(profile) == pytest.approx(1.0)          # the host as calibrated
    slower = RequestCost(**{**cost.to_dict(), "stub_warmth": 1.0})
    assert retimed(profile, slower).service[0].seconds == pytest.approx(0.002)
    assert slower.execution_ratio(profile) == pytest.approx(2.0)
    # a profile holding the hand-off by idle: its curve scaled to the probe's (0.3 ms at pauses
    # where the curve says 0.2 on average), the CPU as before
    split = profile.model_copy(update={"host_warmth": [Warmth(idle_s=0.0, factor=1.0, handoff_s=0.0001),
                                                       Warmth(idle_s=0.01, factor=2.0, handoff_s=0.0002)]})
    assert over_pauses(split.warmth_handoff, records) == pytest.approx(0.0002)
    again = retimed(split, RequestCost(**{**cost.to_dict(), "handoff_s": 0.0003, "curve_handoff_s": 0.0002}))
    assert [w.handoff_s for w in again.host_warmth] == pytest.approx([0.00015, 0.0003])
    assert again.service[0].seconds == pytest.approx(0.001) and again.warmth_handoff(0.01) == pytest.approx(0.0003)


def test_retimed_keeps_the_models_threads_apart_where_the_profile_does():
    """The probe reads tritonserver's CPU by thread: its front end's and its models'. A profile
    that holds the models' threads apart takes both from the probe; an older one, whose request
    cost counted them, takes their sum as its request cost."""
    from conftest import make_profile
    from mmesim.loadtest.probe import RequestCost
    cost = RequestCost(requests=40, client_cpu_s=0.0003, client_timed_share=0.5, server_cpu_s=0.0003,
                       stub_cpu_s=0.001, handoff_s=0.0, client_wait_slack_s=0.0, others_cores=0.0,
                       model_thread_s=0.0002)
    old = retimed(make_profile(gpu="cpu", s1=0.001, max_batch=1), cost)
    assert old.request_overhead_s == pytest.approx(0.0005 - old.decode_s_per_byte * old.input_bytes)
    assert old.model_thread_s == 0.0
    apart = retimed(make_profile(gpu="cpu", s1=0.001, max_batch=1, model_thread_s=0.0001), cost)
    assert apart.request_overhead_s == pytest.approx(0.0003 - apart.decode_s_per_byte * apart.input_bytes)
    assert apart.model_thread_s == 0.0002


def test_retimed_scales_the_servers_curves_by_idle_to_the_probes_figures():
    """A profile holding the server's front end and model threads by idle: the probe's requests
    came 4 ms after any previous one (the front end's idle) and 10 ms after their copy's (the
    model threads'), where the curves say 0.3 and 0.2 ms; the probe read 0.6 and 0.3: both
    curves doubled and x1.5, and the front end's factor is then relative to the probe's figure."""
    from conftest import make_profile
    from mmesim.loadtest.probe import RequestCost, over_pauses
    curve = [Warmth(idle_s=0.0, factor=1.0, frontend_s=0.0002, model_thread_s=0.0001),
             Warmth(idle_s=0.01, factor=1.0, frontend_s=0.0005, model_thread_s=0.0002)]
    profile = make_profile(gpu="cpu", s1=0.001, max_batch=1, request_overhead_s=0.0003, model_thread_s=0.00015,
                           host_warmth=curve)
    records, t = [], 0.0
    for i in range(40):                       # two copies in turn: 4 ms after any end, 10 ms after its own
        records.append(RequestRecord(t, t + 0.002, f"m-v{i % 2}", 0, OK, False))
        t += 0.006
    front = over_pauses(profile.warmth_frontend, records, by_model=False)
    assert front == pytest.approx(0.0002 + 0.4 * 0.0003)
    assert over_pauses(profile.warmth_model_thread, records) == pytest.approx(0.0002)
    cost = RequestCost(requests=40, client_cpu_s=0.0003, client_timed_share=0.5, server_cpu_s=2 * front,
                       stub_cpu_s=0.001, handoff_s=0.0, client_wait_slack_s=0.0, others_cores=0.0,
                       model_thread_s=0.0003, curve_frontend_s=front, curve_model_thread_s=0.0002)
    again = retimed(profile, cost)
    assert [w.frontend_s for w in again.host_warmth] == pytest.approx([0.0004, 0.001])
    assert [w.model_thread_s for w in again.host_warmth] == pytest.approx([0.00015, 0.0003])
    # a request 4 ms after the last is handled for what the probe read
    assert again.handling_s(again.input_bytes, model_threads=False) * again.frontend_factor(0.004) == \
        pytest.approx(2 * front)


def test_retimed_with_a_cold_probe_scales_each_end_of_the_curves_by_its_own_probe():
    """The host drifted unevenly: executions after 0-10 ms idle run at 0.6 of the profile's,
    after 150-350 ms at 0.9 (the front end 0.5 and 1.0). Each curve point takes the warm
    probe's ratio up to its median pause (5 ms), the cold one's from its own (250 ms), linear
    in log idle between; without the cold probe every point takes the warm ratio, as before."""
    import math

    from conftest import make_profile
    from mmesim.loadtest.probe import RequestCost
    from mmesim.loadtest.probe import between as around_run
    curve = [Warmth(idle_s=i, factor=f, frontend_s=fe) for i, f, fe in
             ((0.0, 1.0, 0.0002), (0.01, 2.0, 0.0004), (0.05, 2.0, 0.0005), (1.0, 2.0, 0.0006))]
    profile = make_profile(gpu="cpu", s1=0.001, max_batch=1, request_overhead_s=0.0002, host_warmth=curve)
    base = dict(requests=100, client_cpu_s=0.0003, client_timed_share=0.5, handoff_s=0.0, client_wait_slack_s=0.0,
                others_cores=0.0)
    warm = RequestCost(**base, server_cpu_s=0.5 * 0.0003, stub_cpu_s=0.6 * 0.0015, stub_warmth=1.5,
                       curve_frontend_s=0.0003, idle_s=0.005, server_idle_s=0.005)
    cold = RequestCost(**base, server_cpu_s=1.0 * 0.00055, stub_cpu_s=0.9 * 0.002, stub_warmth=2.0,
                       curve_frontend_s=0.00055, idle_s=0.25, server_idle_s=0.25)
    assert (warm.execution_ratio(profile), cold.execution_ratio(profile)) == pytest.approx((0.6, 0.9))
    both = retimed(profile, warm, cold)

    def execution(p, idle):
        return p.service[0].seconds * p.warmth_factor(idle)
    between = 0.6 + 0.3 * math.log(0.01 / 0.005) / math.log(0.25 / 0.005)
    assert [execution(both, i) for i in (0.0, 0.01, 1.0)] == \
        pytest.approx([0.6 * 0.001, between * 0.002, 0.9 * 0.002])
    assert [w.frontend_s for w in both.host_warmth] == pytest.approx(
        [0.5 * 0.0002, (0.5 + 0.5 * math.log(2) / math.log(50)) * 0.0004,
         (0.5 + 0.5 * math.log(10) / math.log(50)) * 0.0005, 1.0 * 0.0006])
    # the warm probe alone: one ratio for the whole curve, the cold end 0.6 as well
    one = retimed(profile, warm)
    assert [execution(one, i) for i in (0.0, 0.01, 1.0)] == pytest.approx([0.6 * 0.001, 0.6 * 0.002, 0.6 * 0.002])
    assert [w.frontend_s for w in one.host_warmth] == pytest.approx([0.5 * f for f in (0.0002, 0.0004, 0.0005, 0.0006)])
    # around a run whose host drifted from the first two probes to one a third slower at both
    # ends: every cost the geometric mean of the two retimings' (an execution's too)
    slower = [RequestCost(**{**c.to_dict(), "stub_cpu_s": 4 / 3 * c.stub_cpu_s, "server_cpu_s": 4 / 3 * c.server_cpu_s})
              for c in (warm, cold)]
    late = retimed(profile, *slower)
    mid = around_run(both, late)
    for i in (0.0, 0.01, 0.05, 1.0):
        assert execution(mid, i) == pytest.approx(math.sqrt(execution(both, i) * execution(late, i)))
        assert execution(mid, i) == pytest.approx(math.sqrt(4 / 3) * execution(both, i))
    assert mid.request_overhead_s == pytest.approx(math.sqrt(both.request_overhead_s * late.request_overhead_s))
    assert [w.frontend_s for w in mid.host_warmth] == pytest.approx(
        [math.sqrt(4 / 3) * w.frontend_s for w in both.host_warmth])
    with pytest.raises(ValueError, match="different warmth curves"):
        around_run(both, profile.model_copy(update={"host_warmth": curve[:2]}))


@pytest.mark.triton
def test_the_cli_measures_the_client_for_a_prediction(triton, tmp_path, capsys):
    """`mmesim loadtest --measure-client` writes the client by pace; `simulate --generator`
    predicts with it; a bad generator file is one clear line before anything runs."""
    out = tmp_path / "client"
    path = str(Path(__file__).parent.parent / "calibration" / "profiles" / "tiny-bert-python-cpu.json")
    assert main(["loadtest", "--measure-client", "--endpoint-url", triton.sagemaker_url, "--protocol", "triton",
                 "--client", "fast", "--profile", path, "--copies", "2", "--probe-seconds", "2",
                 "--out", str(out)]) == 0
    assert "ms a request after" in capsys.readouterr().out
    gen = load(LoadGenerator, out / "generator.json")
    assert len(gen.by_idle) == 3 and gen.on_host and gen.background_cpu_s_per_s > 0
    assert gen.by_idle[0].cpu_s_per_request <= gen.by_idle[-1].cpu_s_per_request
    for probe in ("warm", "cold", "busy", "still"):
        assert list((out / probe).glob("process-*.json")), probe
    wl = tmp_path / "wl.yaml"
    wl.write_text("kind: users\nstages: [{end_s: 5, users: 2, spawn_rate: 10}]\nwait_s: [0.0, 0.01]\n")
    common = ["simulate", "--profile", path, "--instance", "local", "--memory-budget", "2GiB", "--copies", "2",
              "--workload", str(wl), "--json"]
    assert main(common + ["--generator", str(out / "generator.json")]) == 0
    charged = json.loads(capsys.readouterr().out)["client_cpu_ms_per_request"]
    # between the busy end's and the cold end's, with at most a second's background per request
    lo, hi = gen.by_idle[0].cpu_s_per_request, gen.by_idle[-1].cpu_s_per_request + gen.background_cpu_s_per_s
    assert 1e3 * lo * 0.99 <= charged <= 1e3 * hi
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**gen.model_dump(), "by_idle": [{"idle_s": -1, "cpu_s_per_request": 0.001}]}))
    proc = subprocess.run([sys.executable, "-m", "mmesim.cli", *common, "--generator", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "bad.json" in proc.stderr and "idle_s" in proc.stderr
