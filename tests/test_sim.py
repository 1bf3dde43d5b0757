"""The SimPy model: memory tiers and LRU, shared loads, timeouts, the client's stages,
batching, GPU sharing, determinism."""

import pytest

from conftest import MiB, make_profile
from mmesim.endpoint import EndpointConfig
from mmesim.results.records import MODEL_NOT_READY, OK, OUT_OF_MEMORY, OVERLOADED, TIMEOUT
from mmesim.sim import Simulation, max_models_loaded, simulate
from mmesim.workload import Workload

T4 = "ml.g4dn.2xlarge"          # 15109 MiB NVML total; threshold 0.9 -> 13598 MiB budget


def trace_workload(tmp_path, rows, name="trace.csv"):
    path = tmp_path / name
    path.write_text("timestamp,model\n" + "".join(f"{t},{m}\n" for t, m in rows))
    return Workload(kind="trace", trace=str(path))


def outcomes(run):
    return [r.outcome for r in sorted(run.records, key=lambda r: r.start)]


def test_requests_for_a_loading_model_share_one_load(tmp_path):
    p = make_profile(load_s=3.0)
    wl = trace_workload(tmp_path, [(0.0, "tiny-v0"), (0.5, "tiny-v0"), (1.0, "tiny-v0")])
    sim = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0), wl, [1], warm=False)
    run = sim.run(20)
    loads = [e for e in run.events if e.kind == "load"]
    assert len(loads) == 1
    recs = sorted(run.records, key=lambda r: r.start)
    assert all(r.ok and r.cold for r in recs)
    # S3's first byte, 100 MB over 10 streams of 87.5 MB/s (the network allows 3.1 GB/s), untar
    # at 250 MB/s; then the load alone takes the profile's load_s
    download = 0.15 + 100e6 / 875e6 + 100e6 / 250e6
    assert loads[0].time == pytest.approx(download) and loads[0].seconds == pytest.approx(3.0)
    # all three wait for the same load; the first to reach Triton runs alone (no queue delay
    # configured), the other two queue behind it and run as one batch of 2: 10 ms * (1 + 1/7)
    ready = download + 3.0
    ends = [r.end for r in recs]
    assert ends[0] == pytest.approx(ready + 0.010, abs=1e-6)
    assert ends[1] == ends[2] == pytest.approx(ready + 0.010 + 0.010 * (1 + 1 / 7), abs=1e-6)


def test_lru_evicts_the_least_recently_used_idle_model(tmp_path):
    # budget 13598 MiB - baseline 1000: room for 2 copies of 5000 MiB, not 3
    p = make_profile(mem_mib=5000, load_s=1.0, unload_s=0.5)
    wl = trace_workload(tmp_path, [(0, "tiny-v0"), (5, "tiny-v1"), (10, "tiny-v0"), (15, "tiny-v2")])
    sim = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0), wl, [3], warm=False)
    run = sim.run(30)
    unloads = [e.model for e in run.events if e.kind == "unload"]
    assert unloads == ["tiny-v1"]           # v0 was used more recently
    assert all(r.ok for r in run.records)
    assert max(used for _, _, used in run.memory) <= 0.9 * 15109 * MiB


@pytest.mark.parametrize("slow_s, evicted", [(10.0, "fast-v0"), (0.01, "slow-v0")])
def test_lru_never_evicts_a_busy_model(tmp_path, slow_s, evicted):
    """slow-v0 is the least recently used when fast-v1 needs room. While its 10 s execution
    is in flight it must be skipped and fast-v0 unloaded instead; once idle, it goes."""
    slow = make_profile(name="slow", mem_mib=5000, load_s=1.0, max_batch=1)
    slow.service = [{"batch": 1, "seconds": slow_s, "cv": 0}]
    fast = make_profile(name="fast", mem_mib=5000, load_s=1.0)
    wl = trace_workload(tmp_path, [(0, "slow-v0"), (0.5, "fast-v0"), (5, "fast-v1")])
    run = Simulation([slow, fast], EndpointConfig(instance_type=T4, overhead_s=0), wl, [1, 2], warm=False).run(30)
    assert [e.model for e in run.events if e.kind == "unload"] == [evicted]
    assert all(r.ok for r in run.records)


def test_nothing_to_evict_fails_with_insufficient_memory(tmp_path):
    p = make_profile(mem_mib=5000, load_s=1.0)
    p.service = [{"batch": 1, "seconds": 20.0, "cv": 0}]
    wl = trace_workload(tmp_path, [(0, "tiny-v0"), (0.1, "tiny-v1"), (5, "tiny-v2")])
    run = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0), wl, [3], warm=False).run(60)
    by_model = {r.model: r.outcome for r in run.records}
    assert by_model["tiny-v2"] == OUT_OF_MEMORY
    assert by_model["tiny-v0"] == OK and by_model["tiny-v1"] == OK


def test_invocation_timeout_and_model_not_ready(tmp_path):
    slow = make_profile(name="slow", s1=70.0, max_batch=1)
    slow.service = [{"batch": 1, "seconds": 70.0, "cv": 0}]
    big = make_profile(name="big", load_s=90.0)
    wl = trace_workload(tmp_path, [(0, "slow-v0"), (0, "big-v0")])
    run = Simulation([slow, big], EndpointConfig(instance_type=T4, overhead_s=0), wl, [1, 1], warm=False).run(200)
    recs = {r.model: r for r in run.records}
    assert recs["slow-v0"].outcome == TIMEOUT                  # loaded in time, executed too slowly
    assert recs["big-v0"].outcome == MODEL_NOT_READY           # still loading after 60 s
    for r in recs.values():
        assert r.end - r.start == pytest.approx(60.0)
    # loading continued after the client gave up
    assert [e.model for e in run.events if e.kind == "load"] == ["slow-v0", "big-v0"]


def test_overload_limit_sheds_requests(tmp_path):
    p = make_profile(max_batch=1, max_inflight=3)
    p.service = [{"batch": 1, "seconds": 1.0, "cv": 0}]
    wl = trace_workload(tmp_path, [(0, "tiny-v0")] * 5)
    run = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0), wl, [1]).run(20)
    assert sorted(outcomes(run)) == sorted([OK] * 3 + [OVERLOADED] * 2)
    assert EndpointConfig(instance_type=T4, max_inflight_per_instance=10).max_inflight_per_instance == 10


def test_stages_follow_locust_spawn_rate():
    wl = Workload(stages=[{"end_s": 10, "users": 4, "spawn_rate": 2}, {"end_s": 20, "users": 1, "spawn_rate": 1}],
                  wait_s=(5, 5))
    sim = Simulation([make_profile()], EndpointConfig(instance_type=T4), wl, [1])
    run = sim.run()
    # Locust's dispatcher: batches of floor(rate) users every floor(rate)/rate s (test_dispatch.py
    # checks the rule against real Locust)
    assert run.users == [(0.0, 2), (1.0, 4), (10.0, 3), (11.0, 2), (12.0, 1)]
    # every user sends its first request when it starts
    starts = sorted(r.start for r in run.records)[:4]
    assert starts == pytest.approx([0.0, 0.0, 1.0, 1.0])


def test_batches_form_under_load_and_gpu_is_shared():
    # 2 models, overlap 0: the GPU serialises; one saturating model batches
    p = make_profile(max_batch=8, s1=0.01)
    wl = Workload(kind="poisson", rates=[{"end_s": 30, "rate": 500}])
    sim = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0), wl, [1], seed=3)
    run = sim.run()
    server = sim.instances[0].slots[0].server
    assert server.batched / server.executions > 3          # 500 req/s cannot run one at a time at 10 ms
    assert all(r.ok for r in run.records)
    # overlap: two copies at once take 2x as long with overlap 0, 1x with overlap 1
    for overlap, expect in ((0.0, 0.02), (1.0, 0.01)):
        q = make_profile(s1=0.01, overlap=overlap)
        import tempfile, pathlib
        with tempfile.TemporaryDirectory() as d:
            w = trace_workload(pathlib.Path(d), [(0, "tiny-v0"), (0, "tiny-v1")])
            r = Simulation([q], EndpointConfig(instance_type=T4, overhead_s=0), w, [2]).run(5)
        assert max(x.end - x.start for x in r.records) == pytest.approx(expect, rel=0.01)


def test_same_seed_same_run_other_seed_other_run():
    p = make_profile(cv=0.3)
    wl = Workload(stages=[{"end_s": 30, "users": 20, "spawn_rate": 5}])
    a = simulate([p], EndpointConfig(instance_type=T4), wl, copies=5, seed=7)
    b = simulate([p], EndpointConfig(instance_type=T4), wl, copies=5, seed=7)
    c = simulate([p], EndpointConfig(instance_type=T4), wl, copies=5, seed=8)
    assert list(a.records) == list(b.records)
    assert list(a.records) != list(c.records)


def test_max_models_procedure_reproduces_reference_trace():
    # The reference's T4 trace: ~944 MiB baseline, ~268 MiB a copy, 46 copies of resnet50
    p = make_profile(mem_mib=272, baseline_mib=944)
    counts, trace = max_models_loaded([p], EndpointConfig(instance_type=T4))
    assert counts == [46]
    n, used = trace[-1]
    assert (used + used / n) / (15109 * MiB) >= 0.9
    n1, used1 = trace[-2]
    assert (used1 + used1 / n1) / (15109 * MiB) < 0.9
    assert trace[0][1] / (15109 * MiB) == pytest.approx(0.0802, abs=0.001)
    assert max_models_loaded([make_profile(mem_mib=268, baseline_mib=944)], EndpointConfig(instance_type=T4))[0] == [47]


def test_popularity_zipf_and_top_n_and_mix():
    # 40 req/s at 10 ms: the GPU keeps up, so every request sent is answered
    wl = Workload(kind="poisson", rates=[{"end_s": 250, "rate": 40}], popularity={"kind": "zipf", "s": 1.2})
    run = Simulation([make_profile(mem_mib=100)], EndpointConfig(instance_type=T4), wl, [10], seed=1).run()
    counts = [0] * 10
    for r in run.records:
        counts[int(r.model.split("-v")[1])] += 1
    assert counts[0] > counts[1] > counts[4] > counts[9]
    assert counts[0] / counts[1] == pytest.approx(2 ** 1.2, rel=0.15)

    wl = Workload(kind="poisson", rates=[{"end_s": 250, "rate": 40}], popularity={"kind": "top-n", "n": 2, "share": 0.9})
    run = Simulation([make_profile(mem_mib=100)], EndpointConfig(instance_type=T4), wl, [10], seed=1).run()
    hot = sum(1 for r in run.records if r.model in ("tiny-v0", "tiny-v1"))
    assert hot / len(run.records) == pytest.approx(0.9, abs=0.02)

    a, b = make_profile(name="a", mem_mib=100), make_profile(name="b", mem_mib=100)
    wl = Workload(kind="poisson", rates=[{"end_s": 250, "rate": 40}], popularity={"kind": "mix", "weights": {"a": 3, "b": 1}})
    run = Simulation([a, b], EndpointConfig(instance_type=T4), wl, [2, 5], seed=1).run()
    share_a = sum(1 for r in run.records if r.model.startswith("a-")) / len(run.records)
    assert share_a == pytest.approx(0.75, abs=0.02)


def test_requests_spread_to_a_second_instance_when_hot():
    p = make_profile(max_batch=1, s1=0.05)
    wl = Workload(kind="poisson", rates=[{"end_s": 20, "rate": 100}])
    run = Simulation([p], EndpointConfig(instance_type=T4, instance_count=2, spread_inflight=4), wl, [1]).run()
    per_inst = [sum(1 for r in run.records if r.instance == i) for i in (0, 1)]
    assert min(per_inst) > 0.2 * sum(per_inst)


def test_translation_to_another_gpu_changes_compute_not_memory():
    from mmesim.catalog import load_catalog
    from mmesim.sim.translate import translate
    p3 = load_catalog().instance("ml.p3.2xlarge")
    p = make_profile(s1=0.010)
    v = translate(p, p3)
    assert v.gpu == "v100" and v.provenance.method == "translated"
    assert v.gpu_memory_bytes == p.gpu_memory_bytes
    # all GPU work: the V100 is faster, by the same factor whatever the model's time, and
    # translating back to the T4 gives the T4's figure again
    g4dn = load_catalog().instance("ml.g4dn.xlarge")
    speedup = p.service[0].seconds / v.service[0].seconds
    assert speedup > 1
    assert make_profile(s1=0.030).service[0].seconds / translate(make_profile(s1=0.030), p3).service[0].seconds \
        == pytest.approx(speedup)
    assert translate(v, g4dn).service[0].seconds == pytest.approx(p.service[0].seconds)
    # a host-bound execution follows the CPU instead: p3's older Xeon makes it slower, not faster
    h = make_profile(s1=0.010, host_share=1.0)
    assert translate(h, p3).service[0].seconds > h.service[0].seconds
    assert translate(h, g4dn) is h


def test_translation_is_idempotent_and_composes():
    """Translating twice to the same instance changes nothing more (the profile takes the
    target's CPU speed); via another GPU it lands where a direct translation does."""
    from mmesim.catalog import load_catalog
    from mmesim.profile import load_profile
    from mmesim.sim.translate import translate
    c = load_catalog()
    g5, p3 = c.instance("ml.g5.2xlarge"), c.instance("ml.p3.2xlarge")
    p = load_profile("roberta-large-pytorch-t4")
    once = translate(p, g5)
    assert once.host_cpu_speed == g5.cpu_speed and once.decode_s_per_byte == pytest.approx(p.decode_s_per_byte / 1.05)
    assert translate(once, g5) == once
    direct, via = translate(p, p3), translate(once, p3)
    for a, b in zip(direct.service, via.service):
        assert b.seconds == pytest.approx(a.seconds, rel=1e-6)
    assert via.decode_s_per_byte == pytest.approx(direct.decode_s_per_byte)


def test_busy_gpu_work_speeds_up_more_than_host_bound_batch1():
    """A model whose busy time is GPU work gains the GPU's speed-up when busy, while its
    host-bound batch-1 time follows the CPU: the two figures translate apart."""
    from mmesim.catalog import load_catalog
    from mmesim.sim.translate import translate
    p = make_profile(s1=0.010, max_batch=8, host_share=1.0, busy_host_share=0.0)
    v = translate(p, load_catalog().instance("ml.g5.2xlarge"))
    per_item = (v.service[1].seconds - v.service[0].seconds) / 7
    before = (p.service[1].seconds - p.service[0].seconds) / 7
    host_speedup = p.service[0].seconds / v.service[0].seconds
    gpu_speedup = before / per_item
    assert 1 < host_speedup < gpu_speedup                  # both faster on a g5; the GPU's work far more


def test_a_cpu_profile_on_a_gpu_instance_says_its_figures_are_cpu_figures():
    from mmesim.results.summary import summarize
    p = make_profile(gpu="cpu", max_batch=1)
    wl = Workload(kind="poisson", rates=[{"end_s": 5, "rate": 10}])
    run = Simulation([p], EndpointConfig(instance_type=T4), wl, [1]).run()
    assert run.cpu_figures == ["tiny"] and not run.translated
    assert any("CPU figures" in w and "not a GPU estimate" in w for w in summarize(run).warnings)


def test_a_cpu_profile_from_another_processor_on_local_says_so():
    """On ``local`` a CPU profile made on another processor is named with that processor; one
    made here, or one that does not say where, is not; a GPU instance never names it."""
    from mmesim.catalog import host_cpu
    from mmesim.results.summary import summarize
    wl = Workload(kind="poisson", rates=[{"end_s": 2, "rate": 10}])
    local = EndpointConfig(instance_type="local", memory_budget_bytes=2 * 1024 ** 3)

    def made_on(cpu, name):
        p = make_profile(gpu="cpu", max_batch=1, name=name)
        return p.model_copy(update={"provenance": p.provenance.model_copy(update={"host_cpu": cpu})})
    profiles = [made_on("Some Other CPU 9000", "away"), made_on(host_cpu(), "here"), made_on(None, "unsaid")]
    run = Simulation(profiles, local, wl, [1, 1, 1]).run()
    assert run.other_processor == ["away (Some Other CPU 9000)"]
    assert any("another processor" in w and "away (Some Other CPU 9000)" in w for w in summarize(run).warnings)
    assert Simulation(profiles[:1], EndpointConfig(instance_type=T4), wl, [1]).run().other_processor == []
    here = Simulation(profiles[1:], local, wl, [1, 1]).run()
    assert here.other_processor == [] and not any("another processor" in w for w in summarize(here).warnings)


def test_utilization_series_match_busy_time():
    from mmesim.results import cloudwatch
    p = make_profile(max_batch=1, s1=0.01, decode=1e-6, payload=1000)   # 1 ms of host CPU a request
    p.service = [{"batch": 1, "seconds": 0.01, "cv": 0}]
    wl = Workload(kind="poisson", rates=[{"end_s": 120, "rate": 50}])
    run = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0), wl, [1], seed=2).run()
    gpu = dict(cloudwatch.series(run)["GPUUtilization"])
    cpu = dict(cloudwatch.series(run)["CPUUtilization"])
    # 50 req/s x 10 ms = 50 % GPU; 50 req/s x 1 ms = 5 % of one core
    assert gpu[60.0] == pytest.approx(50, rel=0.1)
    assert cpu[60.0] == pytest.approx(5, rel=0.1)


def test_run_says_what_produced_it():
    """The Run's typed fields describe the run: copies asked for, warm copies, generator busy
    time, and which profiles had to be translated (which the Summary warns about)."""
    from mmesim.results.summary import summarize
    a, b = make_profile(name="a", mem_mib=100), make_profile(name="b", mem_mib=100, gpu="a10g")
    wl = Workload(kind="poisson", rates=[{"end_s": 10, "rate": 20}],
                  generator={"workers": 2, "cpu_s_per_request": 0.001})
    run = simulate([a, b], EndpointConfig(instance_type=T4, instance_count=2), wl, copies=[2, 3], seed=4)
    assert (run.seed, run.gpu, run.profiles, run.translated) == (4, "t4", ["a", "b"], ["b"])
    assert run.copies == [2, 3] and run.targets == 5
    assert run.copies_loaded_at_start == 5          # all five fit, so all start loaded
    assert len(run.cpu_busy_s) == 2 and run.vcpus == 8
    assert run.generator_workers == len(run.generator_busy_s) == 2
    # about 200 requests at 1 ms of client CPU each
    assert sum(run.generator_busy_s) == pytest.approx(len(run.records) * 0.001, rel=0.05)
    assert any("translated to t4: b" in w for w in summarize(run).warnings)
