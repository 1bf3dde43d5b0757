"""The platform's state machine (mmesim.sim.residency) on its own: what the simulator and
the emulator both rely on, worked out by hand."""

from mmesim.sim.residency import LOADED, LOADING, ON_DISK, REMOTE, UNLOADING, Resident, Residency

GB = 10**9


def loaded(res: Residency, key: str, size: int) -> Resident:
    r = Resident(key)
    assert res.reserve(r, size) == []
    res.ask_thread(r, lambda _r: None)
    res.loaded(r)
    return r


def test_reserve_evicts_idle_models_least_recently_used_first_and_no_more():
    res = Residency(budget=10 * GB, baseline=1 * GB, load_threads=4)
    a, b, c = loaded(res, "a", 3 * GB), loaded(res, "b", 3 * GB), loaded(res, "c", 3 * GB)
    assert res.committed == 10 * GB and list(res.lru) == ["a", "b", "c"]
    res.touch(a)                                   # a request for a: b is now the least recent
    a.inflight = 1                                 # and a is busy
    d = Resident("d")
    assert res.reserve(d, 4 * GB) == [b, c]        # 4 GB needs two idle models: b, then c
    assert (b.state, c.state, d.state) == (UNLOADING, UNLOADING, LOADING)
    assert res.committed == 1 * GB + 3 * GB + 4 * GB and list(res.lru) == ["a"]
    res.unloaded(b)
    assert b.state == ON_DISK


def test_reserve_changes_nothing_when_busy_models_cannot_make_room():
    res = Residency(budget=8 * GB, baseline=1 * GB, load_threads=4)
    a = loaded(res, "a", 6 * GB)
    a.inflight = 2
    e = Resident("e")
    assert res.reserve(e, 2 * GB) is None
    assert (a.state, e.state, res.committed, list(res.lru)) == (LOADED, REMOTE, 7 * GB, ["a"])


def test_a_fifth_load_waits_for_a_thread_in_the_order_asked():
    res = Residency(budget=100 * GB, baseline=0, load_threads=4)
    begun = []
    rs = [Resident(i) for i in range(6)]
    for r in rs:
        res.reserve(r, GB)
        res.ask_thread(r, begun.append)
    assert begun == rs[:4] and res.loading == 4
    res.loaded(rs[2])                              # a thread is free: the fifth asked begins
    assert begun == rs[:5] and res.loading == 4 and list(res.lru) == [2]
    res.release_thread()                           # a load failed: the sixth begins
    assert begun == rs[:6]


def test_a_load_gone_while_it_waited_passes_its_thread_on():
    res = Residency(budget=100 * GB, baseline=0, load_threads=1)
    first, gone, third = Resident("1"), Resident("2"), Resident("3")
    begun = []
    res.ask_thread(first, begun.append)
    res.ask_thread(gone, lambda r: False)          # e.g. its asyncio task was cancelled
    res.ask_thread(third, begun.append)
    res.loaded(first)
    assert begun == [first, third] and res.loading == 1


def test_cancel_and_reset_give_the_memory_back():
    res = Residency(budget=10 * GB, baseline=1 * GB, load_threads=4)
    a = loaded(res, "a", 2 * GB)
    b = Resident("b")
    res.reserve(b, 3 * GB)
    res.cancel(b)                                  # its load failed
    assert (b.state, res.committed) == (REMOTE, 3 * GB)
    assert res.preload(Resident("c"), 6 * GB) is True and res.preload(Resident("d"), 2 * GB) is False
    gone = res.reset(baseline=2 * GB)              # the server died: every loaded model is gone
    assert [r.key for r in gone] == ["a", "c"] and all(r.state == REMOTE for r in gone)
    assert (res.committed, list(res.lru)) == (2 * GB, [])
