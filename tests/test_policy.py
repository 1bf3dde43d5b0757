"""The platform decisions the simulator and the emulator share (mmesim.sim.policy)."""

from mmesim.sim.policy import inflight_limit, lru_victims, memory_budget, route

GiB = 2**30


def test_memory_budget_is_threshold_of_nvml_total():
    assert memory_budget(15_360 * 2**20, 0.9) == 14_495_514_624


def test_lru_victims_take_idle_models_oldest_first_and_no_more_than_needed():
    loaded = [("a", 2 * GiB, True), ("b", 2 * GiB, False), ("c", 1 * GiB, True), ("d", 3 * GiB, True)]
    # 9 GiB committed of a 10 GiB budget; 3 GiB more needs 2 GiB freed: a alone is enough
    assert lru_victims(loaded, 9 * GiB, 3 * GiB, 10 * GiB) == ["a"]
    # 4 GiB freed: a (2) then c (1) then d: b is busy and is skipped
    assert lru_victims(loaded, 9 * GiB, 5 * GiB, 10 * GiB) == ["a", "c", "d"]
    assert lru_victims(loaded, 1 * GiB, 3 * GiB, 10 * GiB) == []
    # only 6 GiB idle: 8 GiB cannot be freed without the busy model
    assert lru_victims(loaded, 10 * GiB, 8 * GiB, 10 * GiB) is None


class Inst:
    def __init__(self, name, inflight, committed, models=()):
        self.name, self.inflight, self.committed, self.models = name, inflight, committed, set(models)

    def holds(self, model):
        return model in self.models


def test_route_prefers_a_holder_then_spreads_when_it_is_busy():
    a, b, c = Inst("a", 5, 10, {"m"}), Inst("b", 0, 5), Inst("c", 0, 1)
    assert route([a, b, c], "m", spread_inflight=64) is a           # loaded beats idle
    assert route([a, b, c], "x", spread_inflight=64) is c           # nowhere: least busy, least memory
    assert route([a, b, c], "m", spread_inflight=4) is c            # hot: spreads to a less busy one
    a.inflight = b.inflight = c.inflight = 9
    assert route([a, b, c], "m", spread_inflight=4) is a            # nobody less busy: stays
    assert route([b], "m", spread_inflight=1) is b


def test_inflight_limit_is_the_endpoints_else_the_strictest_profiles():
    from conftest import make_profile
    a, b, c = make_profile("a", max_inflight=150), make_profile("b", max_inflight=120), make_profile("c")
    assert inflight_limit(None, [a, b, c]) == 120
    assert inflight_limit(500, [a, b]) == 500
    assert inflight_limit(None, [c]) is None
