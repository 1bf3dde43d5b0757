"""Working memory and leaks in the simulator: an execution that needs more memory than is
free fails as Triton fails it (ExecutionOutOfMemory), the memory threshold trades models
loaded against that risk, and bytes leaked by unloads stay used."""

import pytest

from conftest import MiB, make_profile
from mmesim.endpoint import EndpointConfig
from mmesim.results.records import EXECUTION_OOM, OUT_OF_MEMORY
from mmesim.results.summary import summarize
from mmesim.sim import Simulation
from mmesim.sim.residency import LOADED, UNLOADING
from mmesim.workload import Workload

T4 = "ml.g4dn.2xlarge"          # 15109 MiB NVML total


def test_working_bytes_interpolate_and_grow_with_the_batch():
    p = make_profile(working_memory=[{"batch": 8, "bytes": 800 * MiB}, {"batch": 1, "bytes": 100 * MiB}])
    assert [w.batch for w in p.working_memory] == [1, 8]
    assert p.working_bytes(1) == 100 * MiB
    assert p.working_bytes(4) == 400 * MiB
    assert p.working_bytes(16) == 1600 * MiB          # proportional beyond the largest measured
    assert make_profile().working_bytes(32) == 0      # none given: nothing to run out of


def _run(threshold: float, working_mib: int, seed: int = 1):
    # 27 copies of 500 MiB over a 1000 MiB baseline: as many as fit are loaded before the run
    # (22 at 0.8, 25 at 0.9, 27 at 0.97), the rest are loaded in turn by LRU
    p = make_profile(mem_mib=500, load_s=0.5, unload_s=0.1, s1=0.02, max_batch=1,
                     working_memory=[{"batch": 1, "bytes": working_mib * MiB}] if working_mib else [])
    # 10 req/s x 20 ms: the GPU is busy a fifth of the time, so executions of different models
    # (which run at once, sharing it) rarely number more than two
    wl = Workload(kind="poisson", rates=[{"end_s": 60, "rate": 10}], popularity={"kind": "uniform"})
    sim = Simulation([p], EndpointConfig(instance_type=T4, memory_threshold=threshold, overhead_s=0), wl, [27],
                     seed=seed)
    return sim, sim.run()


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.97])
def test_no_working_memory_no_execution_failures(threshold):
    _, run = _run(threshold, 0)
    assert summarize(run).failures_by_cause.get(EXECUTION_OOM, 0) == 0


def test_threshold_past_the_working_memory_headroom_is_a_cliff():
    """800 MiB per execution. At 0.8 and 0.9 the memory left above the loaded copies (3109 and
    1609 MiB once full) holds one or more executions; at 0.97 it is 609 MiB, so once the LRU has
    filled memory every execution fails, while more models stay loaded."""
    fails, loaded = {}, {}
    for t in (0.8, 0.9, 0.97):
        sim, run = _run(t, 800)
        s = summarize(run)
        fails[t] = s.failures_by_cause.get(EXECUTION_OOM, 0) / s.requests
        loaded[t] = sum(1 for e in run.events if e.kind == "preload")
    assert (loaded[0.8], loaded[0.9], loaded[0.97]) == (22, 25, 27)
    # three (0.8) or two (0.9) executions at once fit; more coincide only now and then
    assert fails[0.8] <= fails[0.9] < 0.05
    assert fails[0.97] > 0.5                 # the cliff: no execution fits beside 27 copies


def test_failed_execution_leaves_the_model_loaded_and_is_fast():
    sim, run = _run(0.97, 800)
    oom = [r for r in run.records if r.outcome == EXECUTION_OOM]
    assert oom and all(r.end - r.start < 0.02 for r in oom if not r.cold)   # fails at once, never executes
    assert sim.instances[0].workspace.in_use == 0                           # nothing reserved is left


def test_leaked_bytes_accumulate_per_unload():
    leak = 50 * MiB
    wl = Workload(kind="poisson", rates=[{"end_s": 120, "rate": 20}], popularity={"kind": "uniform"})

    def run(**kw):
        p = make_profile(mem_mib=500, load_s=0.5, unload_s=0.1, s1=0.02, max_batch=1, **kw)
        sim = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0), wl, [40], seed=2)
        return sim, sim.run()

    sim, result = run(leak_bytes_per_unload=leak)
    inst = sim.instances[0]
    unloaded = sum(1 for e in result.events if e.kind == "unload" and e.time + e.seconds <= result.duration_s)
    resident = sum(500 * MiB for s in inst.slots.values() if s.state in (LOADED, UNLOADING))
    assert unloaded > 20
    # what NVML would report: baseline + copies in memory + every completed unload's leak
    assert inst.used == inst.baseline + resident + unloaded * leak
    # the leak crowds copies out: fewer are loaded at the end than without it, and loads
    # start failing for memory once the leak alone fills the budget
    clean, clean_result = run()
    assert len(inst.lru) < len(clean.instances[0].lru)
    oom = [summarize(r).failures_by_cause.get(OUT_OF_MEMORY, 0) for r in (result, clean_result)]
    assert oom[0] > 2 * oom[1]
