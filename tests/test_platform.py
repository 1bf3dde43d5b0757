"""The platform's costs: downloads sharing the network, loads sharing a load-thread pool,
the disk, the host CPUs and PCIe; ModelNotReadyException at model_ready_timeout_s; a full
disk; a model too large for the instance."""

import pytest

from conftest import MiB, make_profile
from mmesim.cli import main
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.results.cloudwatch import series
from mmesim.results.records import DISK_FULL, MODEL_NOT_READY, OK
from mmesim.results.summary import summarize
from mmesim.sim import Simulation, max_models_loaded, simulate
from mmesim.workload import Workload

T4 = "ml.g4dn.2xlarge"     # 8 vCPUs, 25 Gbit/s, T4 on PCIe Gen3 x16, NVMe cache at 1000 MB/s


def cold_burst(tmp_path, profile, n, endpoint=None, at=0.0, until=120.0):
    """n copies of ``profile`` requested once each at time ``at``, none loaded before."""
    path = tmp_path / f"burst{n}.csv"
    path.write_text("timestamp,model\n" + "".join(f"{at},{profile.name}-v{i}\n" for i in range(n)))
    endpoint = endpoint or EndpointConfig(instance_type=T4, overhead_s=0)
    sim = Simulation([profile], endpoint, Workload(kind="trace", trace=str(path)), [n], warm=False)
    return sim.run(until), sim


def moves(run, kind):
    return [e for e in run.events if e.kind == kind]


def span(events):
    return max(e.time + e.seconds for e in events) - min(e.time for e in events)


def test_eight_cold_models_load_later_than_one(tmp_path):
    p = make_profile(mem_mib=500, load_s=2.0)
    one, _ = cold_burst(tmp_path, p, 1)
    eight, _ = cold_burst(tmp_path, p, 8)
    assert all(r.ok and r.cold for r in eight.records)
    alone = moves(one, "load")[0].seconds
    assert alone == pytest.approx(2.0)                  # load_s is one load alone
    loads = moves(eight, "load")
    assert len(loads) == 8
    # Triton loads 4 at a time: the last four wait for a thread, so the burst takes two rounds
    assert span(loads) > 1.9 * alone
    assert sorted(e.seconds for e in loads)[-1] > 1.9 * alone   # ModelLoadingTime: the whole load call
    threads = sorted(e.time + e.thread_wait_s for e in loads)
    assert threads[3] < min(e.time + e.seconds for e in loads) <= threads[4]   # the fifth waited for a thread
    assert max(r.end for r in eight.records) > max(r.end for r in one.records) + 0.9 * alone


def test_host_cpus_bound_load_throughput_whatever_the_threads(tmp_path):
    """Loads that are mostly deserialising (host CPU): 16 load threads on 8 vCPUs share the
    cores, so each deserialises at half speed; 4 threads make it four rounds."""
    p = make_profile(mem_mib=100, load_s=2.0)
    wide = EndpointConfig(instance_type=T4, overhead_s=0, platform={"load_parallelism": 16})
    run16, sim = cold_burst(tmp_path, p, 16, wide)
    run4, _ = cold_burst(tmp_path, p, 16)
    cpu_per_load = sim.instances[0].host.deserialise_s(sim.profiles[0])
    assert 1.8 < cpu_per_load < 2.0                     # the rest is the disk read and the copy
    s16, s4 = span(moves(run16, "load")), span(moves(run4, "load"))
    assert s16 >= 16 * cpu_per_load / 8                 # 8 vCPUs can deserialise no faster
    assert s16 < 3 * cpu_per_load + 2.0                 # ... and the 16 threads do use them all
    assert s4 >= 16 * cpu_per_load / 4
    assert all(r.ok for r in run16.records) and all(r.ok for r in run4.records)


def test_disk_and_pcie_bound_loads_share_their_bandwidth(tmp_path):
    """Big artifacts and resident bytes, little CPU: loads at once split the disk and PCIe, so
    together they move no more bytes a second than the disk and the link allow."""
    p = make_profile(mem_mib=1500, load_s=1.5).model_copy(update={"artifact_bytes": 1_000_000_000})
    ep = EndpointConfig(instance_type=T4, overhead_s=0, platform={"load_parallelism": 8})
    one, sim = cold_burst(tmp_path, p, 1, ep)
    four, _ = cold_burst(tmp_path, p, 4, ep)
    inst = sim.instances[0]
    assert inst.host.deserialise_s(sim.profiles[0]) == pytest.approx(0.3, abs=0.01)   # 1 s read, 0.2 s copy
    loads = moves(four, "load")
    assert min(e.seconds for e in loads) > 2.5 * moves(one, "load")[0].seconds
    # four reads of 1 GB through one 1000 MB/s volume, four 1500 MiB copies through one link
    assert span(loads) >= 4e9 / inst.host.disk.total + 4 * 1500 * MiB / inst.host.pcie.total
    assert span(loads) < 4 * moves(one, "load")[0].seconds      # the CPU parts still overlap
    assert inst.host.disk.moved == pytest.approx(1e9) and inst.host.pcie.moved == pytest.approx(1500 * MiB)


def test_downloads_share_the_network_and_untar_on_the_cpus(tmp_path):
    p = make_profile(mem_mib=100).model_copy(update={"artifact_bytes": 1_000_000_000})
    one, _ = cold_burst(tmp_path, p, 1)
    eight, _ = cold_burst(tmp_path, p, 8)
    d1 = moves(one, "download")[0].seconds
    # alone: S3's first byte, 1 GB over 10 streams of 87.5 MB/s, untar at 250 MB/s on one vCPU
    assert d1 == pytest.approx(0.15 + 1e9 / 875e6 + 1e9 / 250e6)
    # eight at once split the instance's 25 Gbit/s: 8 GB take 2.56 s instead of 1.14 s each;
    # the eight untars run side by side on the eight vCPUs
    d8 = [e.seconds for e in moves(eight, "download")]
    assert d8 == pytest.approx([d1 + 8e9 / (25e9 / 8) - 1e9 / 875e6] * 8)
    # CloudWatch's download and load metrics come from these moves, and cold requests wait for both
    cw = series(eight, period_s=60)
    assert cw["ModelDownloadingTime"][0][1] == pytest.approx(sum(d8) / 8 * 1e6)
    assert cw["ModelLoadingTime"][0][1] == pytest.approx(sum(e.seconds for e in moves(eight, "load")) / 8 * 1e6)
    assert cw["ModelLoadingWaitTime"][0][1] > (min(d8) + 2.0) * 1e6


@pytest.mark.parametrize("ready_s, outcome", [(5.0, MODEL_NOT_READY), (20.0, OK)])
def test_model_ready_timeout_either_side_of_the_load(tmp_path, ready_s, outcome):
    """A 10 s load: a 5 s model_ready_timeout answers 429 at 5 s while the load goes on, and the
    next request finds the model loaded; a 20 s one waits for it."""
    p = make_profile(load_s=10.0)
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n0,tiny-v0\n30,tiny-v0\n")
    ep = EndpointConfig(instance_type=T4, overhead_s=0, model_ready_timeout_s=ready_s)
    sim = Simulation([p], ep, Workload(kind="trace", trace=str(path)), [1], warm=False)
    run = sim.run(60)
    first, second = sorted(run.records, key=lambda r: r.start)
    assert first.outcome == outcome and first.cold
    if outcome == MODEL_NOT_READY:
        assert first.end - first.start == pytest.approx(5.0, abs=0.01)
    else:
        assert first.end - first.start > 10.0
    assert len(moves(run, "load")) == 1                 # the load finished either way
    assert second.ok and not second.cold
    assert sim.instances[0].inflight == 0               # nobody is left counted on the instance


def test_ready_timeout_longer_than_invocation_timeout_still_fails_at_the_invocation_timeout(tmp_path):
    p = make_profile(load_s=30.0)
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n0,tiny-v0\n")
    ep = EndpointConfig(instance_type=T4, overhead_s=0, invocation_timeout_s=20, model_ready_timeout_s=40)
    run = Simulation([p], ep, Workload(kind="trace", trace=str(path)), [1], warm=False).run(60)
    (r,) = run.records
    assert r.outcome == MODEL_NOT_READY and r.end - r.start == pytest.approx(20.0)


def test_full_disk_is_named_as_such(tmp_path):
    """A 150 MB cache holds one 100 MB artifact; the loaded model's stays, so the next fails."""
    p = make_profile(mem_mib=500)
    p.service = [{"batch": 1, "seconds": 30.0, "cv": 0}]            # v0 busy while v1 is asked for
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n0,tiny-v0\n5,tiny-v1\n")
    ep = EndpointConfig(instance_type=T4, overhead_s=0, disk_cache_bytes=150_000_000)
    run = Simulation([p], ep, Workload(kind="trace", trace=str(path)), [2], warm=False).run(60)
    by_model = {r.model: r.outcome for r in run.records}
    assert by_model == {"tiny-v0": OK, "tiny-v1": DISK_FULL}
    assert summarize(run).failures_by_cause == {DISK_FULL: 1}
    assert sum(v for _, v in series(run)["Invocation5XXErrors"]) == 1


def test_full_disk_makes_room_by_deleting_an_unused_artifact(tmp_path):
    """Room for two artifacts and one model in memory: v1 unloads v0 (its artifact stays, now
    unused), so v2's download deletes v0's artifact and everyone is served."""
    p = make_profile(mem_mib=7000)
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n0,tiny-v0\n10,tiny-v1\n20,tiny-v2\n")
    ep = EndpointConfig(instance_type=T4, overhead_s=0, disk_cache_bytes=250_000_000)
    run = Simulation([p], ep, Workload(kind="trace", trace=str(path)), [3], warm=False).run(40)
    assert all(r.ok for r in run.records)
    assert [e.model for e in moves(run, "evict-disk")] == ["tiny-v0"]


def test_a_model_too_large_for_the_budget_counts_zero(tmp_path, capsys):
    # T4: 15109 MiB NVML total, 90 %: a 13598 MiB budget; 13000 + 1000 baseline does not fit
    big = make_profile(name="huge", mem_mib=13000)
    small = make_profile(name="small", mem_mib=1000)
    ep = EndpointConfig(instance_type=T4)
    assert max_models_loaded([big], ep)[0] == [0]
    counts, _ = max_models_loaded([big, small], ep)
    assert counts[0] == 0 and counts[1] == 12            # the other profile is counted without it
    with pytest.raises(ConfigError, match="huge"):
        simulate([big], ep, Workload(kind="poisson", rates=[{"end_s": 1, "rate": 1}]))
    path = big.save(tmp_path / "huge.json")
    assert main(["simulate", "--profile", str(path), "--instance", T4, "--copies", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    for words in ("huge", "13,000 MiB", "1,000 MiB", "13,598 MiB", "0 models"):
        assert words in err


def test_platform_costs_from_an_endpoint_file(tmp_path, capsys):
    good = tmp_path / "ep.yaml"
    good.write_text("instance_type: ml.g4dn.2xlarge\nplatform: {load_parallelism: 1, s3_first_byte_s: 0.2}\n")
    assert main(["simulate", "--profile", "resnet50-pytorch-t4", "--endpoint", str(good), "--copies", "2",
                 "--cold", "--workload", str(_short_workload(tmp_path)), "--json"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("instance_type: ml.g4dn.2xlarge\nplatform: {load_parallelism: 0}\n")
    capsys.readouterr()
    assert main(["simulate", "--profile", "resnet50-pytorch-t4", "--endpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml" in err and "platform.load_parallelism" in err


def _short_workload(tmp_path):
    path = tmp_path / "wl.yaml"
    path.write_text("kind: poisson\nrates: [{end_s: 10, rate: 5}]\n")
    return path


def test_request_decoding_competes_with_loads_for_the_vcpus(tmp_path):
    """On ml.g4dn.xlarge's 4 vCPUs, four loads deserialising take every core: a warm model's
    request decoded meanwhile is one of five threads on four cores (0.2 s of work takes
    0.25 s), not served by a vCPU of its own."""
    warm = make_profile("a", load_s=0.5, s1=0.001, request_overhead_s=0.2)
    cold = make_profile("b", load_s=10.0)

    def latency_at_7s(with_loads: bool) -> float:
        rows = ["0.0,a-v0", "7.0,a-v0"] + [f"5.0,b-v{i}" for i in range(4 if with_loads else 0)]
        path = tmp_path / f"trace{with_loads}.csv"
        path.write_text("timestamp,model\n" + "".join(sorted(r + "\n" for r in rows)))
        sim = Simulation([warm, cold], EndpointConfig(instance_type="ml.g4dn.xlarge", overhead_s=0),
                         Workload(kind="trace", trace=str(path)), [1, 4], warm=False)
        run = sim.run(60.0)
        return next(r.end - r.start for r in run.records if r.model == "a-v0" and r.start >= 6.9)

    alone, during = latency_at_7s(False), latency_at_7s(True)
    assert during / alone == pytest.approx((0.2 * 5 / 4 + 0.001) / (0.2 + 0.001), rel=0.02)
