"""How executions share the processor they run on: a GPU's ceiling over k concurrent
executions, and a CPU-only host (instance type local) where models, request handling and an
on-host load generator share N cores."""

import pytest

from conftest import make_profile
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.sim import Simulation
from mmesim.workload import Workload

T4 = "ml.g4dn.2xlarge"


@pytest.fixture
def two_cores(monkeypatch):
    """The local host as a 2-core machine, whatever this one has."""
    import mmesim.catalog
    monkeypatch.setattr(mmesim.catalog, "host_cores", lambda: 2)


def trace(tmp_path, rows, generator=None):
    path = tmp_path / "trace.csv"
    path.write_text("timestamp,model\n" + "".join(f"{t},{m}\n" for t, m in rows))
    return Workload(kind="trace", trace=str(path), generator=generator)


def cpu_model(name="m", threads=1, s1=0.1, **kw):
    return make_profile(name=name, gpu="cpu", s1=s1, max_batch=1, mem_mib=100, baseline_mib=100,
                        cpu_threads=threads, **kw)


def ends(run):
    return sorted(r.end for r in run.records if r.ok)


def run_local(profiles, copies, wl, seconds=10, **ep):
    return Simulation(profiles, EndpointConfig(instance_type="local", **ep), wl, copies).run(seconds)


# -- a CPU-only host ------------------------------------------------------------------------
@pytest.mark.parametrize("threads, expect", [(2, 0.2), (1, 0.1)])
def test_two_models_on_two_cores(tmp_path, two_cores, threads, expect):
    """Each 100 ms alone. With 2 threads each they want 4 cores of 2: both run at half
    speed; with 1 thread each they fit and neither slows."""
    a, b = cpu_model("a", threads), cpu_model("b", threads)
    run = run_local([a, b], [1, 1], trace(tmp_path, [(0, "a-v0"), (0, "b-v0")]))
    assert ends(run) == pytest.approx([expect, expect], abs=1e-4)


def test_an_idle_core_does_not_speed_up_a_one_thread_model(tmp_path, two_cores):
    """One single-threaded model, closed loop: one execution at a time, 100 ms each,
    whatever the second core does; two copies use both cores and double throughput."""
    wl = Workload(stages=[{"end_s": 20, "users": 40, "spawn_rate": 100}], wait_s=(0, 0))
    one = run_local([cpu_model()], [1], wl, 20)
    two = run_local([cpu_model()], [2], wl, 20)
    three = run_local([cpu_model()], [3], wl, 20)
    assert len(one.records) / 20 == pytest.approx(10, rel=0.02)
    assert len(two.records) / 20 == pytest.approx(20, rel=0.02)
    # a third copy has no third core: 3 executions share 2 cores, throughput stays at 20/s
    assert len(three.records) / 20 == pytest.approx(20, rel=0.02)


def test_client_on_the_same_host_slows_the_model(tmp_path, two_cores):
    """A 2-thread model (100 ms alone) and a Locust worker needing 100 ms of CPU per request.
    Elsewhere, the second request's client work overlaps the first execution for free; on
    the host, 3 cores are wanted of 2 while both run, so both progress at 2/3 speed."""
    rows = [(0, "m-v0"), (0, "m-v0")]
    gen = {"workers": 1, "cpu_s_per_request": 0.1}
    away = run_local([cpu_model(threads=2)], [1], trace(tmp_path, rows, gen))
    here = run_local([cpu_model(threads=2)], [1], trace(tmp_path, rows, {**gen, "on_host": True}))
    assert ends(away) == pytest.approx([0.2, 0.3], abs=1e-4)
    # client 1 alone to 0.1; execution 1 and client 2 share until both finish at 0.1 + 0.1 / (2/3)
    assert ends(here) == pytest.approx([0.25, 0.35], abs=1e-4)


def test_request_handling_is_on_the_request_path_and_shares_the_cores(tmp_path, two_cores):
    """The server's fixed cost per request (HTTP handling) comes before the execution, and
    on a CPU-only host it competes with the executions for cores."""
    alone = run_local([cpu_model(threads=2, request_overhead_s=0.02)], [1], trace(tmp_path, [(0, "m-v0")]))
    assert ends(alone) == pytest.approx([0.12], abs=1e-4)
    # a second request's handling (1 core) starts while the first executes (2 cores): 3 of 2
    both = run_local([cpu_model(threads=2, request_overhead_s=0.02)], [1], trace(tmp_path, [(0, "m-v0"), (0.05, "m-v0")]))
    first, second = ends(both)
    assert first > 0.12 + 0.005 and second > first + 0.1


def test_handoff_holds_the_instance_and_waits_for_a_core_without_using_one(tmp_path, two_cores):
    """The Python backend's hand-off (50 ms after a 100 ms execution): a second request to
    the same instance waits for it; alongside a 2-thread neighbour the execution shares the
    cores, the hand-off only moves at the pace they allow, and it adds no core-seconds."""
    a = cpu_model("a", threads=2, handoff_s=0.05)
    run = run_local([a], [1], trace(tmp_path, [(0, "a-v0"), (0, "a-v0")]))
    assert ends(run) == pytest.approx([0.15, 0.3], abs=1e-4)
    b = cpu_model("b", threads=2, s1=0.2)
    sim = Simulation([a, b], EndpointConfig(instance_type="local"), trace(tmp_path, [(0, "a-v0"), (0, "b-v0"), (0.25, "b-v0")]),
                     [1, 1])
    run = sim.run(10)
    # both executions at half speed: a's ends at 0.2; its hand-off then runs beside b (2 of 2
    # cores wanted: full pace) to 0.25; b ends at 0.3, and b's second request (0.25) shares
    # nothing with a hand-off: 0.3 + 0.2
    assert ends(run) == pytest.approx([0.25, 0.3, 0.5], abs=1e-4)
    assert sim.instances[0].cores.core_s_until_now() == pytest.approx(2 * 0.1 + 2 * 0.2 * 2)


def test_cpu_utilization_counts_every_core_second(tmp_path, two_cores):
    wl = Workload(stages=[{"end_s": 10, "users": 40, "spawn_rate": 100}], wait_s=(0, 0))
    sim = Simulation([cpu_model(threads=1)], EndpointConfig(instance_type="local"), wl, [4])
    run = sim.run(10)
    cpu = run.utilization["CPUUtilization"][0]
    assert sum(cpu[1:]) / len(cpu[1:]) == pytest.approx(200, rel=0.02)     # both cores busy, in percent


def test_cpu_profile_on_a_gpu_instance_keeps_its_gpu_model(tmp_path):
    """On a GPU instance a CPU profile runs as before: executions on the GPU model (its
    overlap), host work on separate vCPUs, however many threads it names."""
    p = cpu_model(threads=2, overlap=0.0)
    run = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0), trace(tmp_path, [(0, "m-v0"), (0, "m-v1")]),
                     [2]).run(5)
    assert ends(run) == pytest.approx([0.2, 0.2], abs=1e-4)


# -- a GPU's ceiling -------------------------------------------------------------------------
CURVE = [{"concurrent": 1, "throughput": 1.0}, {"concurrent": 2, "throughput": 1.6},
         {"concurrent": 4, "throughput": 2.0}, {"concurrent": 8, "throughput": 2.0}]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8, 16])
def test_gpu_throughput_flattens_at_the_measured_ceiling(tmp_path, k):
    """k executions of 100 ms started together on k copies all end at k x 0.1 / S(k), with
    S the measured curve (interpolated between points, flat beyond the last)."""
    s = {1: 1.0, 2: 1.6, 3: 1.8, 4: 2.0, 8: 2.0, 16: 2.0}[k]
    p = make_profile(s1=0.1, max_batch=1, mem_mib=100, concurrency_scaling=CURVE)
    run = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0),
                     trace(tmp_path, [(0, f"tiny-v{i}") for i in range(k)]), [k]).run(10)
    assert ends(run) == pytest.approx([k * 0.1 / s] * k, abs=1e-5)


def test_without_a_curve_overlap_still_grows_throughput(tmp_path):
    """Profiles without a measured curve keep the overlap model: S(k) = 1 + overlap (k - 1)."""
    p = make_profile(s1=0.1, max_batch=1, mem_mib=100, overlap=0.5)
    run = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0),
                     trace(tmp_path, [(0, f"tiny-v{i}") for i in range(8)]), [8]).run(10)
    assert ends(run) == pytest.approx([8 * 0.1 / 4.5] * 8, abs=1e-5)


def test_the_most_contended_model_sets_the_pace(tmp_path):
    capped = make_profile(name="capped", s1=0.1, max_batch=1, mem_mib=100, concurrency_scaling=CURVE[:2])
    free = make_profile(name="free", s1=0.1, max_batch=1, mem_mib=100, overlap=1.0)
    rows = [(0, "capped-v0"), (0, "capped-v1"), (0, "free-v0"), (0, "free-v1")]
    run = Simulation([capped, free], EndpointConfig(instance_type=T4, overhead_s=0), trace(tmp_path, rows),
                     [2, 2]).run(10)
    # 4 running, capped's curve is flat at 1.6 beyond k=2: every execution runs at 1.6 / 4
    assert ends(run) == pytest.approx([0.1 * 4 / 1.6] * 4, abs=1e-5)


# -- the one engine: SharedProcessor, with SharedRate (bandwidths) and Cores on it ------------
def _finishes(resource, jobs):
    """Start ``(at, work, tag)`` jobs on ``resource``; the time each finished."""
    import simpy
    out = {}

    def start(i, work, tag):
        resource.run(work, tag, lambda i: out.__setitem__(i, resource.env.now), i)
    for i, (at, work, tag) in enumerate(jobs):
        resource.env.process(_at(resource.env, at, start, i, work, tag))
    resource.env.run()
    return [out[i] for i in range(len(jobs))]


def _at(env, at, fn, *args):
    yield env.timeout(at)
    fn(*args)


def test_bandwidth_caps_each_transfer_and_shares_the_total():
    """A 100 B/s link, 60 B/s per transfer: one alone moves at 60; two share 50 each."""
    import simpy
    from mmesim.sim.transfer import SharedRate
    link = SharedRate(simpy.Environment(), 100, 60)
    got = []
    link.start(60, "a", lambda v, s: got.append((v, link.env.now, s)))
    link.start(120, "b", lambda v, s: got.append((v, link.env.now, s)))
    link.env.run()
    # both at 50 B/s until a's 60 B are done at 1.2 s; b then has 60 B left, alone at 60 B/s
    assert got == [("a", pytest.approx(1.2), pytest.approx(1.2)), ("b", pytest.approx(2.2), pytest.approx(2.2))]
    assert link.moved == pytest.approx(180)


def test_cores_weigh_jobs_by_their_demand_and_count_core_seconds():
    """2 cores: a 2-thread job and a 1-thread job want 3: both at 2/3 speed."""
    import simpy
    from mmesim.sim.cores import Cores
    cores = Cores(simpy.Environment(), 2)
    ends = _finishes(cores, [(0, 0.2, 2), (0, 0.1, 1)])
    # 0.1 s of work at 2/3 speed ends at 0.15; the 2-thread job has 0.1 left, alone: 0.25
    assert ends == pytest.approx([0.25, 0.15])
    assert cores.core_s_until_now() == pytest.approx(2 * 0.2 + 0.1)   # work alone times demand
    assert cores.busy_until_now() == pytest.approx(0.25)


def test_jobs_that_finish_together_are_all_called_back():
    import simpy
    from mmesim.sim.cores import Cores
    cores = Cores(simpy.Environment(), 2)
    ends = _finishes(cores, [(0, 0.3, 1), (0, 0.3, 1), (0, 0.3, 1), (0.1, 0.1, 1)])
    # 3 jobs on 2 cores at 2/3 speed; the fourth joins at 0.1: 4 at 1/2 speed
    assert ends[3] == pytest.approx(0.1 + 0.1 / 0.5)
    assert ends[0] == ends[1] == ends[2]
    left = 0.3 - 0.1 * 2 / 3 - 0.2 * 0.5         # each of the three after 0.3 s
    assert ends[0] == pytest.approx(0.3 + left / (2 / 3))


def test_a_job_started_by_a_finish_costs_one_event_and_keeps_its_times():
    """2 cores, two chains of jobs (each finish starts its chain's next job), a third chain
    joining at 0.05 s: times as processor sharing gives them, and one SimPy event per job
    (a finish schedules after its callbacks, so no timer is made stale at once)."""
    import simpy
    from mmesim.sim.cores import Cores
    env = simpy.Environment()
    cores = Cores(env, 2)
    done = []

    def chain(name, left):
        def finished(_):
            done.append((name, env.now))
            if left > 1:
                chain(name, left - 1)
        cores.run(0.1, 1, finished, None)

    chain("a", 3)
    chain("b", 3)
    env.timeout(0.05).callbacks.append(lambda _: chain("c", 1))     # the third joins at 0.05 s
    events = 0
    while env.peek() != float("inf"):
        env.step()
        events += 1
    # a and b alone at full speed until 0.05 (0.05 s left each); then three jobs on 2 cores at
    # 2/3 speed: a and b finish at 0.125 and start their next; c, 0.05 left, ends at 0.2; a and
    # b alone again end at 0.25, their last at 0.35
    assert [t for n, t in done if n == "c"] == [pytest.approx(0.2)]
    assert [t for n, t in done if n == "a"] == pytest.approx([0.125, 0.25, 0.35])
    assert [t for n, t in done if n == "b"] == pytest.approx([0.125, 0.25, 0.35])
    # c's joining, the timer it made stale (due at 0.1), then one per finish time: the starts
    # of a's and b's next jobs inside the finishes make none stale
    assert events == 6


# -- a host that queues some woken threads behind a running one (EndpointConfig.host_wakeups) --
def _packed(share, moved_after_s=1.0, cores=2, full_share=None, slice_s=None, late_wait_s=None):
    import numpy as np
    import simpy
    from mmesim.endpoint import WakePlacement
    from mmesim.sim.cores import PackedCores
    from mmesim.sim.random import Stream
    return PackedCores(simpy.Environment(), cores, WakePlacement(packed_share=share, moved_after_s=moved_after_s,
                                                                 full_share=full_share, slice_s=slice_s,
                                                                 late_wait_s=late_wait_s),
                       Stream(np.random.default_rng(0)))


@pytest.mark.parametrize("share, moved, ends", [
    (0.0, 1.0, [0.2, 0.3]),      # on the idle core at once: processor sharing
    (1.0, 1.0, [0.4, 0.3]),      # on the running one's core, first: it stands still for the newcomer's 0.2 s
    (1.0, 0.05, [0.25, 0.3]),    # the kernel moves one of them to the idle core after 50 ms
])
def test_a_thread_woken_beside_a_running_one_may_take_its_core(share, moved, ends):
    """2 cores: a 0.2 s job at 0, then a 0.2 s job at 0.1 with the other core idle. Displaced,
    the first computes nothing and takes no core, then goes on with the 0.1 s it had left."""
    cores = _packed(share, moved)
    assert _finishes(cores, [(0, 0.2, 1), (0.1, 0.2, 1)]) == pytest.approx(ends)
    assert cores.woken == 1 and cores.packed == (1 if share else 0)
    assert cores.packed_s == pytest.approx(ends[0] - 0.2)
    assert cores.core_s_until_now() == pytest.approx(0.4)        # no work added, none lost
    assert cores.busy_until_now() == pytest.approx(max(ends))


def test_only_a_thread_woken_with_a_core_idle_and_a_thread_running_displaces_one():
    """Every core idle (the first job), or too few idle for the newcomer (it takes its fair
    share, as processor sharing has it); a hand-off (weight 0) neither displaces nor is displaced."""
    cores = _packed(1.0)
    ends = _finishes(cores, [(0, 0.4, 2), (0.1, 0.1, 1)])
    assert cores.woken == 0 and ends == pytest.approx([0.45, 0.25])    # 3 of 2 cores wanted: 2/3 speed
    cores = _packed(1.0)
    ends = _finishes(cores, [(0, 0.2, 1), (0.1, 0.1, 2)])               # 2 threads, 1 core idle: fair share
    assert cores.woken == 0 and ends == pytest.approx([0.25, 0.25])
    cores = _packed(1.0)
    ends = _finishes(cores, [(0, 0.2, 0), (0.1, 0.1, 1)])               # only a hand-off runs
    assert cores.woken == 0 and ends == pytest.approx([0.2, 0.2])
    cores = _packed(1.0)
    ends = _finishes(cores, [(0, 0.2, 1), (0.05, 0.1, 0), (0.1, 0.05, 1)])
    # the hand-off is never the one displaced: the first job stands still 0.05 s
    assert cores.packed == 1 and ends == pytest.approx([0.25, 0.15, 0.15])


@pytest.mark.parametrize("full_share, slice_s, ends", [
    (None, None, [0.25, 0.45, 0.45]),  # processor sharing: three threads on two cores, each at 2/3
    (0.0, 1.0, [0.25, 0.45, 0.45]),    # measured: nobody ran at once
    (1.0, 1.0, [0.2, 0.4, 0.5]),       # at once, in place of one: it stands still the newcomer's 0.1 s
    (1.0, 0.05, [0.225, 0.425, 0.475]),  # for its slice, then the three share the two cores
])
def test_a_thread_woken_on_a_full_host_may_run_at_once_in_place_of_one(full_share, slice_s, ends):
    """2 cores, both busy with 0.4 s jobs from 0; a 0.1 s job starts at 0.1. Run at once, it
    takes a running thread's core; the other core's thread goes on untouched."""
    cores = _packed(0.0, full_share=full_share, slice_s=slice_s)
    got = _finishes(cores, [(0, 0.4, 1), (0, 0.4, 1), (0.1, 0.1, 1)])
    assert got[2] == pytest.approx(ends[0]) and sorted(got[:2]) == pytest.approx(ends[1:])
    assert cores.crowded == (1 if full_share else 0) and cores.preempted == (1 if full_share else 0)
    assert cores.preempted_s == pytest.approx(min(0.1, slice_s) if full_share else 0)
    assert cores.core_s_until_now() == pytest.approx(0.9)                          # no work added, none lost


@pytest.mark.parametrize("slice_s, late_wait_s, jobs, ends, waited, preempted", [
    # waits 50 ms for a running thread's slice, then runs whole in its place
    (1.0, 0.05, [(0, 0.4, 1), (0, 0.4, 1)], [0.25, 0.4, 0.5], 0.05, 1),
    # ... for a slice of its own, then the three share the two cores
    (0.05, 0.05, [(0, 0.4, 1), (0, 0.4, 1)], [0.275, 0.425, 0.475], 0.05, 1),
    # a core frees before the slice ends (the other job ends at 0.15): it starts there at once
    (1.0, 0.2, [(0, 0.4, 1), (0, 0.15, 1)], [0.25, 0.15, 0.4], 0.05, 0),
])
def test_a_thread_woken_on_a_full_host_that_does_not_run_at_once_waits_for_a_slice(slice_s, late_wait_s, jobs, ends,
                                                                                  waited, preempted):
    """2 cores busy from 0; a 0.1 s job starts at 0.1 and does not run at once (full_share 0):
    with late_wait_s it waits for the running thread's slice to end, then takes that one's
    place, or for a core to free, whichever comes first; without, its fair share."""
    from mmesim.endpoint import WakePlacement
    cores = _packed(0.0, full_share=0.0, slice_s=slice_s, late_wait_s=late_wait_s)
    got = _finishes(cores, jobs + [(0.1, 0.1, 1)])
    assert got[2] == pytest.approx(ends[0]) and sorted(got[:2]) == pytest.approx(ends[1:])
    assert (cores.crowded, cores.late, cores.preempted) == (1, 1, preempted) and cores.late_s == pytest.approx(waited)
    assert cores.core_s_until_now() == pytest.approx(sum(w for _, w, _ in jobs) + 0.1)     # no work added, none lost
    assert WakePlacement(packed_share=0, moved_after_s=1, full_share=0, slice_s=1, late_wait_s=0.05).displaces


def test_only_a_full_host_preempts_and_only_a_thread_computing():
    """A core idle is the other rule's (packed_share); a hand-off neither preempts nor is preempted."""
    cores = _packed(0.0, full_share=1.0, slice_s=1.0)
    assert _finishes(cores, [(0, 0.2, 1), (0.1, 0.2, 1)]) == pytest.approx([0.2, 0.3])   # a core was idle
    assert cores.crowded == 0
    cores = _packed(0.0, full_share=1.0, slice_s=1.0)
    got = _finishes(cores, [(0, 0.4, 1), (0, 0.4, 1), (0.1, 0.1, 0)])                      # a hand-off
    assert cores.crowded == 0 and got == pytest.approx([0.4, 0.4, 0.2])
    cores = _packed(0.0, full_share=1.0, slice_s=1.0)
    got = _finishes(cores, [(0, 0.4, 1), (0, 0.2, 0), (0.05, 0.4, 1), (0.1, 0.1, 1)])
    assert cores.preempted == 1 and got[1] == pytest.approx(0.2)    # the hand-off is never the one displaced


def _short_requests(placements, users: int, seed: int = 0) -> list[tuple]:
    """Short requests on 2 cores (requests' handling, 1 ms executions, the client on the
    host), 20 s of ``users`` closed-loop users, once per placement: (cores, latencies sorted)."""
    profile = cpu_model(s1=0.001, request_overhead_s=0.0003, handoff_s=0.0001)
    wl = Workload(stages=[{"end_s": 20, "users": users, "spawn_rate": 100}], wait_s=(0, 0.01),
                  generator={"workers": 1, "cpu_s_per_request": 0.0003, "on_host": True})
    out = []
    for wakeups in placements:
        sim = Simulation([profile], EndpointConfig(instance_type="local", host_wakeups=wakeups), wl, [4], seed=seed)
        run = sim.run(20)
        out.append((sim.instances[0].cores, sorted(r.end - r.start for r in run.records)))
    return out


def test_the_host_wakeups_of_a_local_endpoint_queue_the_measured_share(tmp_path, two_cores):
    """Short requests on 2 cores (requests' handling, executions, the client on the host): about
    the measured share of wake-ups beside a running thread take its core; latency grows, the
    tail most, and the same seed gives the same run."""
    from mmesim.endpoint import WakePlacement
    placed = WakePlacement(packed_share=0.3, moved_after_s=0.0015)
    (_, fair), (cores, packed), (_, again) = _short_requests((None, placed, placed), users=4)
    assert cores.woken > 1000 and cores.packed / cores.woken == pytest.approx(0.3, abs=0.03)
    assert packed == again
    p50, p95 = (lambda x: x[len(x) // 2]), (lambda x: x[int(0.95 * len(x))])
    assert p50(packed) > p50(fair) and p95(packed) - p95(fair) > p50(packed) - p50(fair)


def test_a_full_host_that_preempts_lengthens_the_tail_more_than_the_median(two_cores):
    """8 users on 2 cores, the cores often all busy: about the measured share of threads woken
    then run at once in place of a running one; the tail longer, more than the median, and
    about the same work done (a thread standing still while the other core's finishes leaves
    that core idle: a few % fewer requests)."""
    from mmesim.endpoint import WakePlacement
    idle_only = WakePlacement(packed_share=0.3, moved_after_s=0.0015)
    full = WakePlacement(packed_share=0.3, moved_after_s=0.0015, full_share=0.8, slice_s=0.0014)
    (idle_cores, before), (cores, after) = _short_requests((idle_only, full), users=8, seed=1)
    assert cores.crowded > 1000 and cores.preempted / cores.crowded == pytest.approx(0.8, abs=0.03)
    assert idle_cores.crowded == 0
    assert 0.93 * len(before) < len(after) < len(before)
    p50, p95 = (lambda x: x[len(x) // 2]), (lambda x: x[int(0.95 * len(x))])
    assert p95(after) - p95(before) > max(0.0, p50(after) - p50(before))


def test_on_a_full_host_a_thread_that_does_not_run_at_once_waits_for_a_slice_or_a_free_core(two_cores):
    """The same host where only 30 % run at once: the others wait for a running thread's slice
    (late_wait_s) or a core to free, whichever comes first; with 1 ms executions a core often
    frees first, so the mean wait is shorter than a slice's rest, and waiting for a core costs
    about what sharing one fairly did (throughput within 3 %, p95 within 10 %)."""
    from mmesim.endpoint import WakePlacement
    fair = WakePlacement(packed_share=0.3, moved_after_s=0.0015, full_share=0.3, slice_s=0.0014)
    (fair_cores, before), (cores, after) = _short_requests(
        (fair, fair.model_copy(update={"late_wait_s": 0.0010})), users=8, seed=1)
    assert cores.crowded > 1000 and cores.late / cores.crowded == pytest.approx(0.7, abs=0.03)
    assert 0.2 * 0.001 < cores.late_s / cores.late < 0.9 * 0.001 and not cores.queued
    assert fair_cores.late == 0
    assert len(after) == pytest.approx(len(before), rel=0.03)
    assert after[int(0.95 * len(after))] == pytest.approx(before[int(0.95 * len(before))], rel=0.1)


def test_host_wakeups_describe_the_local_host_only(tmp_path):
    from mmesim.endpoint import WakePlacement, read_host_wakeups
    with pytest.raises(ValueError, match="host_wakeups applies to instance type local only"):
        EndpointConfig(instance_type=T4, host_wakeups=WakePlacement(packed_share=0.2, moved_after_s=0.001))
    (tmp_path / "old.json").write_text('{"burst_ms": 1, "by_pause": [], "chain": null}')
    with pytest.raises(ConfigError, match="old.json.*placement.*run examples/host_wakeups.py again"):
        read_host_wakeups(tmp_path / "old.json")
    (tmp_path / "bare.yaml").write_text("packed_share: 0.2\nmoved_after_s: 0.0015\n")
    assert read_host_wakeups(tmp_path / "bare.yaml").moved_after_s == 0.0015


# -- the load generator's CPU: inside its timer, or after the answer -------------------------
@pytest.mark.parametrize("on_host", [False, True])
def test_only_the_timed_share_of_client_cpu_is_latency(tmp_path, two_cores, on_host):
    """A 100 ms model, one user with no wait, a client needing 100 ms of CPU per request of
    which 40 % inside its timer: latency 40 + 100 ms, but each cycle also holds the 60 ms of
    recording after the answer: one request every 200 ms."""
    wl = Workload(stages=[{"end_s": 10, "users": 1, "spawn_rate": 1}], wait_s=(0, 0),
                  generator={"workers": 1, "cpu_s_per_request": 0.1, "timed_share": 0.4, "on_host": on_host})
    run = run_local([cpu_model()], [1], wl, 10, overhead_s=0.0)
    lat = [r.end - r.start for r in run.records if r.ok]
    assert lat and all(x == pytest.approx(0.14, abs=1e-3) for x in lat)
    assert len(run.records) == pytest.approx(10 / 0.2, abs=1)
    assert sum(run.generator_busy_s) == pytest.approx(0.1 * len(run.records), abs=0.11)


def test_all_client_cpu_is_latency_by_default(tmp_path, two_cores):
    wl = Workload(stages=[{"end_s": 10, "users": 1, "spawn_rate": 1}], wait_s=(0, 0),
                  generator={"workers": 1, "cpu_s_per_request": 0.1})
    run = run_local([cpu_model()], [1], wl, 10, overhead_s=0.0)
    assert all(r.end - r.start == pytest.approx(0.2, abs=1e-3) for r in run.records if r.ok)


@pytest.mark.parametrize("timed_share", [1.0, 0.4])
def test_the_clients_timer_slack_lengthens_each_cycle_but_no_latency(tmp_path, two_cores, timed_share):
    """The same 100 ms model and 100 ms client, and a timer waking the user 50 ms late: each
    cycle grows by 50 ms whatever share of the client's CPU is timed; latency does not."""
    gen = {"workers": 1, "cpu_s_per_request": 0.1, "timed_share": timed_share}
    cycles = {}
    for slack in (0.0, 0.05):
        wl = Workload(stages=[{"end_s": 10, "users": 1, "spawn_rate": 1}], wait_s=(0, 0),
                      generator={**gen, "wait_slack_s": slack})
        run = run_local([cpu_model()], [1], wl, 10, overhead_s=0.0)
        assert all(r.end - r.start == pytest.approx(0.1 + 0.1 * timed_share, abs=1e-3) for r in run.records if r.ok)
        cycles[slack] = 10 / len(run.records)
    assert cycles[0.0] == pytest.approx(0.2, rel=0.03) and cycles[0.05] == pytest.approx(0.25, rel=0.03)
