"""The host's placement of woken threads: measured by the probe (mmesim.calibrate.placement),
kept by a CPU profile, and taken by the simulator and the emulator's virtual backend on
instance type local unless the endpoint gives its own."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_profile
from mmesim.calibrate import placement as probe
from mmesim.endpoint import FAIR, EndpointConfig, WakePlacement, host_placement
from mmesim.results.summary import summarize
from mmesim.sim import Simulation
from mmesim.workload import Workload

PLACED = WakePlacement(packed_share=0.3, moved_after_s=0.0015, source="probe A")
SHORT = Workload(stages=[{"end_s": 10, "users": 4, "spawn_rate": 100}], wait_s=(0, 0.01),
                 generator={"workers": 1, "cpu_s_per_request": 0.0003, "on_host": True})


@pytest.fixture
def two_cores(monkeypatch):
    import mmesim.catalog
    monkeypatch.setattr(mmesim.catalog, "host_cores", lambda: 2)


def cpu_model(name="m", wakeups=None):
    return make_profile(name=name, gpu="cpu", s1=0.001, max_batch=1, mem_mib=100, baseline_mib=100, cpu_threads=1,
                        request_overhead_s=0.0003, handoff_s=0.0001, host_wakeups=wakeups)


def test_placement_is_which_of_two_overlapping_bursts_waited():
    # four pairs (the first of each displaced in two of them, the second never) and a burst alone
    start = np.array([0.0, 0.5, 2.0, 2.5, 4.0, 4.5, 6.0, 6.5, 8.0])
    end = start + 1.0
    wait_ms = np.array([0.6, 0.0, 0.0, 0.1, 0.5, 0.0, 0.1, 0.0, 0.9])
    parts = probe.displaced(start, end, wait_ms)
    assert parts == {"first": {"n": 4, "waited": 0.5}, "second": {"n": 4, "waited": 0.0}}
    # long bursts: a displaced one stands still 1.5 ms at most, however long the other runs
    long_burst = 4e-3
    long_rows = [(0.005, long_burst + (1.5e-3 if i % 2 else 0.0)) for i in range(40)]
    placed = probe.placement({"displaced": parts}, long_rows, long_burst, "synthetic")
    assert placed == {"packed_share": 0.5, "moved_after_s": pytest.approx(1.5e-3), "source": "synthetic"}
    # nobody waited in the long pairs: the move is moot, the burst is its ceiling
    assert probe.placement({"displaced": parts}, [(0.005, long_burst)] * 10, long_burst, "s")["moved_after_s"] == \
        pytest.approx(long_burst)
    # a full host: newcomers that started at once (within 0.3 ms) and the CPU they ran first
    # (and the others' delay: the rest of a running thread's slice)
    full_rows = [(0.0001, 1.4e-3, 1.5e-3)] * 3 + [(0.001, 0.0, 0.2e-3)]
    assert probe.full_host(full_rows) == {"full_share": 0.75, "slice_s": pytest.approx(1.4e-3),
                                          "late_wait_s": pytest.approx(1e-3),
                                          "displaced_wait_p50_s": pytest.approx(1.5e-3)}
    placed = probe.placement({"displaced": parts}, long_rows, long_burst, "synthetic", probe.full_host(full_rows))
    assert (placed["full_share"], placed["slice_s"], placed["late_wait_s"]) == \
        (0.75, pytest.approx(1.4e-3), pytest.approx(1e-3))
    WakePlacement(**placed)
    # a core freed while the thread a newcomer displaced stood still: it moved there if it ran
    # again by 0.3 ms after (rows: when the core freed, when it stood still, when it ran again)
    freed_rows = [(0.5e-3, 0.0, 0.6e-3), (0.5e-3, 0.0, 0.79e-3), (0.5e-3, 0.0, 1.4e-3), (0.9e-3, 0.0, 1.4e-3)]
    assert probe.freed_host(freed_rows) == {"freed_share": 0.5, "freed_rounds": 4}
    assert probe.freed_host([]) == {"freed_share": None, "freed_rounds": 0}
    # everyone ran at once: nobody's wait to tell
    assert probe.full_host(full_rows[:3])["late_wait_s"] is None
    # nobody ran at once: the slice is moot, but each waited for one before it ran
    late = probe.placement({"displaced": parts}, long_rows, long_burst, "s", probe.full_host([(0.001, 0.0, 0.0)] * 4))
    assert (late["full_share"], late["late_wait_s"]) == (0, pytest.approx(1e-3))
    assert WakePlacement(**{**late, "packed_share": 0}).displaces
    with pytest.raises(ValueError, match="no two bursts of the chain overlapped"):
        probe.placement({"displaced": {"first": {"n": 0, "waited": None}}}, long_rows, long_burst, "s")


def test_the_probe_measures_this_host_and_names_it(monkeypatch):
    """A short run of the real probe (forked workers, no Triton): a placement that says which
    host and when; on one core there is nothing to place beside."""
    from mmesim.catalog import host_cpu
    placed = probe.measure_placement(chain_s=1.0, long_rounds=20, source="test", full_rounds=20)
    assert 0 <= placed.packed_share <= 1 and 0 < placed.moved_after_s < 0.5
    assert 0 <= placed.full_share <= 1 and 0 < placed.slice_s <= probe.FULL_BURST_S
    assert placed.source.startswith(f"test's probe on {host_cpu()} x ") and "UTC" in placed.source
    # a core freeing while a displaced thread stands still: it freed in the window asked for, the
    # displaced one stood still from the wake-up (a gap in its clock) and then ran again
    for freed, stood, resumed in probe.measure_freed(12):
        assert probe.FREED_AFTER_S[0] <= freed < probe.FREED_AFTER_S[1] + 0.5e-3
        assert stood <= probe.WAITED_S and resumed > stood + probe.GAP_S
    monkeypatch.setattr(probe, "host_cores", lambda: 1)
    assert probe.measure_placement(chain_s=1.0, long_rounds=20) is None


def test_local_takes_the_profiles_placement_unless_the_endpoint_gives_one():
    a, b = cpu_model("a", PLACED), cpu_model("b", WakePlacement(packed_share=0.2, moved_after_s=0.0025,
                                                                 source="probe B"))
    assert host_placement(None, [a], "local") == PLACED
    assert host_placement(None, [a, cpu_model("c", PLACED)], "local") == PLACED       # one host, measured twice alike
    mixed = host_placement(None, [a, b, cpu_model("c")], "local")                      # c did not measure it
    assert (mixed.packed_share, mixed.moved_after_s) == pytest.approx((0.25, 0.002))
    assert "median of 2 profiles" in mixed.source and "probe A" in mixed.source and "probe B" in mixed.source
    given = WakePlacement(packed_share=0.1, moved_after_s=0.001)
    assert host_placement(given, [a], "local") == given
    assert host_placement(FAIR, [a], "local") is None                                  # processor sharing, asked for
    assert host_placement(None, [cpu_model("c")], "local") is None                     # never measured
    assert host_placement(None, [cpu_model("z", WakePlacement(packed_share=0, moved_after_s=0.001))], "local") is None
    assert host_placement(None, [a], "ml.g4dn.xlarge") is None                         # a GPU instance's host
    # a full host's figures: the median of the probes that measured them (older ones did not)
    c = cpu_model("c", WakePlacement(packed_share=0.3, moved_after_s=0.0015, full_share=0.9, slice_s=0.0014))
    d = cpu_model("d", WakePlacement(packed_share=0.3, moved_after_s=0.0015, full_share=0.7, slice_s=0.0012,
                                     late_wait_s=0.001))
    both = host_placement(None, [a, c, d], "local")
    assert (both.packed_share, both.full_share, both.slice_s) == pytest.approx((0.3, 0.8, 0.0013))
    assert both.late_wait_s == pytest.approx(0.001)                     # the one probe that saw a newcomer wait
    assert host_placement(None, [a, b], "local").full_share is None
    only_full = WakePlacement(packed_share=0, moved_after_s=0.001, full_share=0.9, slice_s=0.0014)
    assert host_placement(only_full, [a], "local") == only_full                        # not processor sharing


def test_a_full_hosts_figures_go_together():
    with pytest.raises(ValueError, match="full_share and slice_s go together"):
        WakePlacement(packed_share=0.3, moved_after_s=0.0015, full_share=0.9)
    assert WakePlacement(packed_share=0, moved_after_s=0.001, full_share=0.5, slice_s=0.001).displaces
    assert not WakePlacement(packed_share=0, moved_after_s=0.001, full_share=0, slice_s=0.001).displaces
    with pytest.raises(ValueError, match="late_wait_s is the full host's"):
        WakePlacement(packed_share=0.3, moved_after_s=0.0015, late_wait_s=0.001)


def test_shipped_cpu_profiles_carry_the_whole_placement_as_recorded():
    """A shipped profile without the full host's figures would predict a full host by processor
    sharing, which no probe of this project's kernel shows: each carries them, and they are the
    medians of the probes recorded in docs/shipped-full-host.json."""
    from pathlib import Path
    from mmesim.profile import load_profile
    root = Path(__file__).parent.parent
    record = json.loads((root / "docs" / "shipped-full-host.json").read_text())
    probes = record["probes_utc_2026_12_07"]
    medians = {k: np.median([p[k] for p in probes if p[k] is not None]) for k in ("full_share", "slice_s", "late_wait_s")}
    shipped = sorted((root / "calibration" / "profiles").glob("*-cpu.json"))
    assert len(shipped) == 4
    for path in shipped:
        placed = load_profile(path).host_wakeups
        got = {k: getattr(placed, k) for k in medians}
        assert got == pytest.approx(medians, rel=1e-3), path.name
        assert "docs/shipped-full-host.json" in placed.source and "Xeon" in placed.source


def test_a_prediction_on_local_is_the_one_the_endpoints_placement_gives(two_cores):
    """The profile's placement predicts exactly what the same placement given by the endpoint
    does (same seed), and says so in the Summary; 'fair' predicts processor sharing."""
    def run(profile, wakeups=None):
        sim = Simulation([profile], EndpointConfig(instance_type="local", host_wakeups=wakeups), SHORT, [4], seed=3)
        return sim, sim.run(10)
    sim_profile, from_profile = run(cpu_model(wakeups=PLACED))
    _, from_endpoint = run(cpu_model(), PLACED)
    _, fair = run(cpu_model(wakeups=PLACED), FAIR)
    _, bare = run(cpu_model())
    lat = lambda r: sorted(x.end - x.start for x in r.records)                          # noqa: E731
    assert lat(from_profile) == lat(from_endpoint) and lat(fair) == lat(bare)
    assert lat(from_profile) != lat(fair)
    cores = sim_profile.instances[0].cores
    assert cores.woken > 500 and cores.packed / cores.woken == pytest.approx(0.3, abs=0.04)
    s = summarize(from_profile)
    assert s.host_wakeups == PLACED.model_dump() and summarize(fair).host_wakeups is None
    assert s.p95_ms > summarize(fair).p95_ms


def test_the_virtual_backend_takes_the_profiles_placement_too(tmp_path):
    from mmesim.emulator.emulator import EmulatorConfig, Endpoint

    def backend_wakeups(**kw):
        config = EmulatorConfig(instance="local", models=str(tmp_path), **kw)
        return Endpoint(config, tmp_path / "work")._backends()[0].wakeups
    assert backend_wakeups(profiles=[cpu_model(wakeups=PLACED)]) == PLACED
    assert backend_wakeups(profiles=[cpu_model(wakeups=PLACED)], host_wakeups=FAIR) is None
    assert backend_wakeups(profiles=[cpu_model()]) is None


def test_the_cli_says_which_placement_it_took_and_fair_turns_it_off(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(cpu_model(wakeups=PLACED).model_dump_json())
    wl = tmp_path / "wl.yaml"
    wl.write_text("kind: users\nstages: [{end_s: 3, users: 2, spawn_rate: 10}]\nwait_s: [0, 0.01]\n")

    def simulate(*extra):
        out = subprocess.run([sys.executable, "-m", "mmesim", "simulate", "--profile", str(path), "--instance", "local",
                              "--copies", "2", "--workload", str(wl), "--out", str(tmp_path / "out"), *extra],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout
    text = simulate()
    assert "host placement: 30 % of threads woken beside a running one take its core, for up to 1.50 ms (probe A" \
        in " ".join(text.split())
    assert json.loads(simulate("--json"))["host_wakeups"]["packed_share"] == 0.3
    assert json.loads(simulate("--json", "--host-wakeups", "fair"))["host_wakeups"] is None


def test_the_emulator_says_how_it_places_threads_and_fair_turns_it_off(tmp_path):
    from emulator_process import emulate, fake_artifacts
    profile = tmp_path / "m.json"
    profile.write_text(cpu_model(wakeups=PLACED).model_dump_json())
    models = fake_artifacts(tmp_path / "models", ["m-v0.tar.gz"])
    for extra, said in (((), True), (("--host-wakeups", "fair"), False)):
        with emulate("--instance", "local", "--profile", str(profile), "--models", str(models), *extra) as (_, proc):
            pass
        assert ("30 % of threads woken beside a running one take its core" in proc.output) is said, proc.output
