"""`mmesim plan` beyond one MME: only MME-eligible instance types unless the mix says
otherwise, SLOs on p99 and error percentage that decide the count, and the MME against one
endpoint per model and inference components on the same traffic."""

import json
import math

import pytest
import yaml

from mmesim.catalog import load_catalog
from mmesim.cli import main
from mmesim.plan import load_mix, plan
from mmesim.plan.hosting import target_rates

ROBERTA = {
    "name": "roberta",
    "models": [{"name": "roberta", "profile": "roberta-large-pytorch-t4", "copies": 6, "share": 1.0}],
    "traffic": {"peak_rps": 45},
    "slo": {"p95_ms": 400, "max_error_rate": 0.001},
    "candidates": {"instance_types": ["ml.g4dn.xlarge", "ml.g6.xlarge"], "max_instances": 3},
    "simulation": {"duration_s": 40, "warmup_s": 10, "seed": 0},
}


def _mix(tmp_path, data):
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_mix(path)


def test_catalogue_says_which_types_an_mme_may_use():
    c = load_catalog()
    assert c.mme_eligible("ml.p2.xlarge") and c.mme_eligible("ml.g5.16xlarge") and c.mme_eligible("ml.g4dn.xlarge")
    assert not c.mme_eligible("ml.g6.xlarge") and not c.mme_eligible("ml.g6e.xlarge")
    multi = [it for it in c.instances.values() if it.gpus > 1]
    assert {"ml.g4dn.12xlarge", "ml.g5.12xlarge", "ml.g5.48xlarge", "ml.g6.12xlarge", "ml.p3.8xlarge",
            "ml.p4d.24xlarge"} <= {it.name for it in multi}
    assert not any(c.mme_eligible(it) for it in multi)
    assert "multi-model-support" in c.mme_support.source and c.mme_support.checked


def test_plan_leaves_out_ineligible_types_and_says_why(tmp_path, capsys):
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump({**ROBERTA, "compare_hosting": False}))
    assert main(["plan", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["instance_type"] for r in out["ranked"]} == {"ml.g4dn.xlarge"}
    assert [r["instance_type"] for r in out["left_out"]] == ["ml.g6.xlarge"]
    assert "multi-model-support" in out["left_out"][0]["why"]
    # unless the mix asks for every type
    mix, profiles = _mix(tmp_path, {**ROBERTA, "compare_hosting": False,
                                    "candidates": {**ROBERTA["candidates"], "mme_eligible_only": False}})
    result = plan(mix, profiles, workers=1, quiet=True)
    assert "ml.g6.xlarge" in {r["instance_type"] for r in result.ranked} and result.left_out == []


def test_a_p99_bound_decides_the_count_and_the_row_says_so(tmp_path):
    base = {**ROBERTA, "compare_hosting": False, "candidates": {**ROBERTA["candidates"],
                                                                "instance_types": ["ml.g4dn.xlarge"]}}
    loose = plan(*_mix(tmp_path, base), workers=1, quiet=True).ranked[0]
    # a p99 limit just under what the p95-only answer gives forces more instances
    tight = {**base, "slo": {**base["slo"], "p99_ms": 0.9 * loose["p99_ms"]}}
    row = plan(*_mix(tmp_path, tight), workers=1, quiet=True).ranked[0]
    assert row["count"] > loose["count"]
    assert row["decided_by"].startswith(f"p99_ms at {row['count'] - 1}")
    assert row["p99_ms"] <= tight["slo"]["p99_ms"]


def test_error_percent_is_the_error_rate_in_percent(tmp_path):
    mix, _ = _mix(tmp_path, {**ROBERTA, "slo": {"p95_ms": 400, "max_error_percent": 0.5}})
    assert mix.slo.max_error_rate == pytest.approx(0.005)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**ROBERTA, "slo": {"max_error_percent": 0.5, "max_error_rate": 0.01}}))
    assert main(["plan", str(path)]) == 2


def test_mme_against_endpoint_per_model_and_inference_components(tmp_path):
    """Six roberta copies, 45 req/s in Zipf shares: an MME holds them on one or two T4s; one
    endpoint per model pays at least one instance per model and inference components at least
    one GPU per copy, whatever the traffic."""
    mix, profiles = _mix(tmp_path, ROBERTA)
    h = plan(mix, profiles, workers=1, quiet=True).hosting
    by = {o.option: o for o in h.options}
    assert set(by) == {"multi-model endpoint", "one endpoint per model", "inference components"}
    assert h.options[0].option == "multi-model endpoint" and h.verdict.startswith("multi-model endpoint wins")
    # the per-model options, worked out from the measured per-copy capacity and the rates
    cap = {(c["gpu"], c["framework"]): c["capacity_rps"] for c in h.capacity}
    t4 = cap[("t4", "pytorch")]
    assert t4 >= max(r for _, r in target_rates(mix))   # one T4 serves the busiest copy: the search stops there
    rates = [r for _, r in target_rates(mix)]
    assert sum(rates) == pytest.approx(45)
    copies = sum(max(1, math.ceil(r / t4 - 1e-9)) for r in rates)
    assert by["inference components"].gpus == copies >= 6
    assert by["one endpoint per model"].instances >= 6
    assert by["one endpoint per model"].usd_per_hour == pytest.approx(
        by["one endpoint per model"].instances * load_catalog().instance("ml.g4dn.xlarge").price_usd_per_hour)
    assert by["multi-model endpoint"].instances < 6


def test_one_busy_model_needs_as_many_copies_as_its_rate_over_one_copys_capacity(tmp_path):
    """One roberta at 45 req/s: more than one T4 serves (~33 req/s, bisected), so every option
    needs two GPUs, and the capacity found is bracketed: met there, missed 25 % above."""
    mix, profiles = _mix(tmp_path, {**ROBERTA, "models": [{**ROBERTA["models"][0], "copies": 1}],
                                    "candidates": {**ROBERTA["candidates"], "instance_types": ["ml.g4dn.xlarge"]}})
    h = plan(mix, profiles, workers=1, quiet=True).hosting
    t4 = next(c for c in h.capacity if c["gpu"] == "t4")
    assert not t4["at_least"] and 20 < t4["capacity_rps"] < 45
    by = {o.option: o for o in h.options}
    assert by["one endpoint per model"].instances == by["inference components"].gpus == math.ceil(45 / t4["capacity_rps"])
    assert by["one endpoint per model"].at_floor == 0


def test_component_copies_per_instance_stop_at_gpus_cores_or_host_memory():
    from mmesim.plan.hosting import copies_per_instance
    from mmesim.units import GiB
    it = load_catalog().instance("ml.g4dn.12xlarge")         # 4 T4s, 48 vCPUs, 192 GiB
    light = {"cores_per_copy": 0.25, "host_bytes_per_copy": 2 * GiB}
    assert copies_per_instance(it, [light]) == 4
    assert copies_per_instance(it, [light, {**light, "cores_per_copy": 20}]) == 2       # 48 cores / 20
    assert copies_per_instance(it, [{**light, "host_bytes_per_copy": 100 * GiB}]) == 1  # 192 GiB / 100


def test_plan_files_hold_the_hosting_options_and_what_was_left_out(tmp_path):
    from mmesim.plan.report import write_plan
    mix, profiles = _mix(tmp_path, ROBERTA)
    files = write_plan(plan(mix, profiles, workers=1, quiet=True), tmp_path / "out")
    assert {"hosting.csv", "copy_capacity.csv"} <= set(files)
    rows = files["hosting.csv"].read_text().splitlines()
    assert rows[0].startswith("option,configuration,instances,gpus") and len(rows) == 4
    html = files["report.html"].read_text()
    assert "Hosting options" in html and "wins at" in html
    assert "Instance types left out of the MME search" in html and "ml.g6.xlarge" in html
