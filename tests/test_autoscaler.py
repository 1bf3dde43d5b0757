"""Target-tracking autoscaling in the simulator: out under a step in load, back in after it."""

import pytest

from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.profile import load_profile
from mmesim.results.summary import summarize
from mmesim.serde import validate
from mmesim.sim import simulate
from mmesim.workload import Workload

STEP = Workload(kind="poisson", rates=[{"end_s": 120, "rate": 5}, {"end_s": 720, "rate": 60},
                                       {"end_s": 1320, "rate": 5}])


def _endpoint(**policy):
    base = dict(target=1500, min_instances=1, max_instances=5, scale_out_cooldown_s=120, scale_in_cooldown_s=120,
                startup_s=120, scale_in_datapoints=5)
    base.update(policy)
    return EndpointConfig(instance_type="ml.g4dn.xlarge", instance_count=1, autoscaling=base)


def test_scales_out_under_a_step_and_back_in_after_it():
    run = simulate([load_profile("roberta-large-pytorch-t4")], _endpoint(), STEP, copies=10, seed=0)
    tl = run.instance_timeline
    # 60 req/s against a target of 1500 a minute (25/s) per instance: ceil(60/25) = 3 instances
    peak = max(serving for _, _, serving in tl)
    assert peak == 3
    first_out = min(t for t, billed, _ in tl if billed > 1)
    # three 1-minute datapoints above target after the step at 120 s: the decision at 300 s
    assert first_out == pytest.approx(300.0)
    in_service = min(t for t, _, serving in tl if serving > 1)
    assert in_service == pytest.approx(first_out + 120.0)       # the start-up time
    # back to one instance once the load falls at 720 s; 3 instances at 60 req/s already sat
    # under 0.9 x target (the low alarm), so the first datapoint after the fall decides
    t_last, billed_last, serving_last = tl[-1]
    assert (billed_last, serving_last) == (1, 1)
    assert 720 < t_last <= 720 + 60
    assert [t for t, _, _ in tl if 420 < t < 720] == []
    # new instances start empty: their models load on first requests
    loads_on_new = [e for e in run.events if e.kind == "load" and e.instance >= 1]
    assert loads_on_new
    assert 1.0 < run.mean_instances() < 3.0


def test_autoscaling_sits_between_the_fixed_endpoints_in_failures_and_in_cost():
    """The controls: one fixed instance fails more and costs less; three (the peak) fail none
    and cost more. The autoscaler absorbs most of the step, paying for instances only while
    they are billed, and fails requests while its new instances start."""
    def run(endpoint):
        return summarize(simulate([load_profile("roberta-large-pytorch-t4")], endpoint, STEP, copies=10, seed=0))
    one = run(EndpointConfig(instance_type="ml.g4dn.xlarge"))
    three = run(EndpointConfig(instance_type="ml.g4dn.xlarge", instance_count=3))
    scaled = run(_endpoint())
    assert three.failures == 0 < scaled.failures < 0.9 * one.failures
    assert one.cost_per_hour_usd < scaled.cost_per_hour_usd < three.cost_per_hour_usd
    assert three.cost_per_hour_usd == pytest.approx(3 * one.cost_per_hour_usd)


def test_policy_errors_name_the_field():
    with pytest.raises(ConfigError, match="autoscaling.*max_instances"):
        validate(EndpointConfig, {"instance_type": "ml.g4dn.xlarge",
                                  "autoscaling": {"target": 100, "min_instances": 3, "max_instances": 2}},
                 source="ep.yaml")


def test_simulate_cli_takes_the_policy_in_the_endpoint_file_and_shows_instances_over_time(tmp_path, capsys):
    import csv

    import yaml

    from mmesim.cli import main

    ep = tmp_path / "endpoint.yaml"
    ep.write_text(yaml.safe_dump(_endpoint().to_dict()))
    wl = tmp_path / "step.yaml"
    wl.write_text(yaml.safe_dump(STEP.to_dict()))
    out = tmp_path / "out"
    assert main(["simulate", "--profile", "roberta-large-pytorch-t4", "--endpoint", str(ep), "--workload", str(wl),
                 "--copies", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "instances in service (autoscaling)" in printed and "1 -> 3 -> 1" in printed
    rows = list(csv.DictReader((out / "instances.csv").open()))
    assert [int(r["instances_in_service"]) for r in rows][-1] == 1
    assert max(int(r["instances_billed"]) for r in rows) == 3
    assert (out / "instances.png").stat().st_size > 10_000
