"""Locust's dispatch rule in the cases the real-Locust test does not reach (a ramp cut short
by the next stage; a distributed master blocking on its ramp). The rule itself is checked
against real Locust in test_loadtest.py."""

from mmesim.dispatch import batches, stage_at, user_timeline
from mmesim.workload import Stage


def stages(*rows):
    return [Stage(end_s=e, users=u, spawn_rate=r) for e, u, r in rows]


def test_batches_follow_floor_of_the_rate():
    assert batches(0, 10, 5) == [(0.0, 5), (1.0, 10)]
    assert batches(0, 3, 0.5) == [(0.0, 1), (2.0, 2), (4.0, 3)]
    assert batches(9, 4, 10) == [(0.0, 4)]
    assert [n for _, n in batches(0, 7, 2.5)] == [2, 4, 6, 7] and batches(0, 7, 2.5)[1][0] == 0.8


def test_a_new_stage_cuts_a_ramp_short_in_one_process_but_waits_for_it_on_a_master():
    s = stages((2, 8, 2), (10, 2, 10))
    assert user_timeline(s) == [(0.0, 2), (1.0, 4), (2.0, 2)]
    # the master ramps on to 8 (reached at t=3, when its next tick comes) and only then goes to 2
    assert user_timeline(s, distributed=True) == [(0.0, 2), (1.0, 4), (2.0, 6), (3.0, 2)]


def test_the_shape_stops_after_its_last_stage():
    s = stages((5, 3, 1))
    assert stage_at(s, 4.99).users == 3 and stage_at(s, 5.0) is None
    assert user_timeline(s)[-1] == (2.0, 3)
