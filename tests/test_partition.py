"""A partitioned endpoint (one instance per partition, merged into one Summary) against the
unpartitioned simulation of the same endpoint, on a size that fits one process."""

import pytest

from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.plan.partition import compare, partitions
from mmesim.profile import load_profile
from mmesim.workload import Workload

PROFILE = "bert-base-uncased-tensorrt-t4"
WL = Workload(kind="poisson", rates=[{"end_s": 40, "rate": 400}], popularity={"kind": "zipf"})


def test_partitioned_matches_the_whole_endpoint_when_models_stay_put():
    # 120 models on 4 T4s: every one fits (about 42 a T4), so each stays where it was loaded
    err = compare([load_profile(PROFILE)], EndpointConfig(instance_type="ml.g4dn.xlarge", instance_count=4), WL,
                  [120], seed=0, workers=2)
    assert abs(err["requests"]["error"]) < 0.03
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        assert abs(err[key]["error"]) < 0.10, (key, err[key])
    assert err["failures"]["whole"] == err["failures"]["partitioned"] == 0


def test_partitions_split_the_traffic_and_keep_the_preloaded_placement():
    ep = EndpointConfig(instance_type="ml.g4dn.xlarge", instance_count=4)
    parts = partitions([load_profile(PROFILE)], ep, WL, [120], seed=0)
    assert len(parts) == 4 and all(p.endpoint.instance_count == 1 for p in parts)
    rates = [p.workload.rates[0].rate for p in parts]
    assert sum(rates) == pytest.approx(400)
    # every model belongs to exactly one partition
    owned = [sum(1 for p in parts if p.weights[t] > 0) for t in range(120)]
    assert owned == [1] * 120
    # the simulator pre-loads hottest first, round-robin: the hottest four start on four instances
    assert [next(i for i, p in enumerate(parts) if p.weights[t] > 0) for t in range(4)] == [0, 1, 2, 3]
    assert len({p.seed for p in parts}) == 4


def test_a_partition_size_that_does_not_divide_the_endpoint_is_an_error():
    with pytest.raises(ConfigError, match="instances_per_partition"):
        partitions([load_profile(PROFILE)], EndpointConfig(instance_type="ml.g4dn.xlarge", instance_count=3),
                   WL, [20], instances_per_partition=2)
