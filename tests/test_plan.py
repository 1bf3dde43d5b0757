"""`mmesim plan`: the known optimum of a small case (checked by exhaustive search), infeasible
SLOs named with their shortfall, and bad mix files named by file, field and value."""

import json

import pytest
import yaml

from mmesim.cli import main
from mmesim.errors import ConfigError
from mmesim.plan import load_mix, plan
from mmesim.plan.evaluate import evaluate
from mmesim.plan.search import _task, candidates, judge, mix_weights

SMALL = {
    "name": "small",
    "models": [{"name": "roberta", "profile": "roberta-large-pytorch-t4", "copies": 6, "share": 1.0}],
    "traffic": {"peak_rps": 45},
    "slo": {"p95_ms": 400, "max_error_rate": 0.001},
    "candidates": {"instance_types": ["ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g5.xlarge"], "max_instances": 3},
    "simulation": {"duration_s": 40, "warmup_s": 10, "seed": 0},
}


def _write(tmp_path, data, name="mix.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def exhaustive(mix, profiles) -> dict[str, int]:
    """Every candidate at every count from 1, bounds ignored, the same simulations: the
    smallest count meeting every SLO, per candidate label."""
    weights, out = mix_weights(mix), {}
    for c in candidates(mix, profiles):
        for n in range(1, mix.candidates.max_instances + 1):
            if all(v.ratio <= 1 for v in judge(evaluate(_task(mix, c, n, weights)), mix)):
                out[c.label] = n
                break                      # more of the same type only costs more
    return out


def test_plan_finds_the_optimum_of_exhaustive_search(tmp_path):
    mix, profiles = load_mix(_write(tmp_path, SMALL))
    result = plan(mix, profiles, workers=1, quiet=True)
    price = {c.label: c.price for c in candidates(mix, profiles)}
    found = exhaustive(mix, profiles)
    best = min((n * price[label], label, n) for label, n in found.items())
    top = result.ranked[0]
    assert (top["candidate"], top["count"]) == (best[1], best[2])
    assert top["cost_per_hour_usd"] == pytest.approx(best[0])
    # the search needed fewer simulations than the exhaustive one (bounds and bisection)
    assert result.simulations < 3 * mix.candidates.max_instances + 3 * 4


def test_infeasible_slo_says_which_constraint_fails_and_by_how_much(tmp_path, capsys):
    data = {**SMALL, "slo": {"p95_ms": 20, "max_error_rate": 0.001}}
    rc = main(["plan", str(_write(tmp_path, data)), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["ranked"] == []
    closest = out["infeasible"][0]
    # roberta-large takes ~50 ms per request alone on a T4: p95 can never be 20 ms
    assert closest["fails"].startswith("p95_ms ")
    assert "> 20 ms (+" in closest["fails"]
    assert closest["count"] == 3                    # judged at the most instances allowed


def test_memory_and_budget_bounds_rule_out_candidates_with_amounts(tmp_path, capsys):
    data = {**SMALL, "candidates": {**SMALL["candidates"], "memory_thresholds": [0.05]}}
    rc = main(["plan", str(_write(tmp_path, data)), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert all(m["fails"].startswith("memory: roberta-large-pytorch-t4 needs") for m in out["infeasible"])
    data = {**SMALL, "budget_usd_per_month": 300}
    rc = main(["plan", str(_write(tmp_path, data)), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    # 45 req/s of ~30 ms GPU work each, no overlap: at least 2 instances, 2 x 0.7364 x 730 USD
    assert {"candidate": "ml.g4dn.xlarge pytorch t=0.9", "count": None,
            "fails": "budget: at least 2 instances (1,075 USD/month) > 300 USD/month (+258%)"} in out["infeasible"]


@pytest.mark.parametrize("change, field, value", [
    ({"slo": {"p95_ms": -3}}, "slo.p95_ms", "-3"),
    ({"models": [{"name": "r", "profile": "no-such-model", "copies": 2, "share": 1}]}, "models[0].profiles.*",
     "no-such-model"),
    ({"candidates": {"instance_types": ["ml.x9.huge"]}}, "candidates.instance_types", "ml.x9.huge"),
    ({"traffic": {"peak_rps": 10, "users": 5}}, "traffic", None),
    ({"endpoint": {"autoscaling": {"target": 100, "max_instances": 0}}}, "endpoint.autoscaling.max_instances", "0"),
])
def test_bad_mix_file_gives_one_line_naming_file_field_value(tmp_path, capsys, change, field, value):
    path = _write(tmp_path, {**SMALL, **change}, "bad.yaml")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(path) in err and f"field '{field}'" in err
    if value is not None:
        assert value in err


def test_plan_writes_table_plots_and_one_html_report(tmp_path):
    mix, profiles = load_mix(_write(tmp_path, {**SMALL, "candidates": {**SMALL["candidates"],
                                                                      "instance_types": ["ml.g5.xlarge"]}}))
    from mmesim.plan.report import write_plan
    files = write_plan(plan(mix, profiles, workers=1, quiet=True), tmp_path / "out")
    assert {"plan.csv", "simulations.csv", "pareto.png", "capacity.png", "report.html"} <= set(files)
    html = files["report.html"].read_text()
    assert html.count("data:image/png;base64,") == 2 and 'src="http' not in html
    assert "ml.g5.xlarge" in html


def test_plan_with_an_autoscaling_policy_runs_the_what_if_of_the_best_plan(tmp_path):
    # one T4 serves ~33 req/s of roberta-large (its own profile, no translation): the 45 req/s peak needs two
    data = {**SMALL, "candidates": {**SMALL["candidates"], "instance_types": ["ml.g4dn.xlarge"]},
            "endpoint": {"autoscaling": {"target": 1200, "min_instances": 1, "max_instances": 3,
                                         "startup_s": 120, "scale_out_cooldown_s": 120, "scale_in_cooldown_s": 120,
                                         "scale_in_datapoints": 5}}}
    mix, profiles = load_mix(_write(tmp_path, data))
    result = plan(mix, profiles, workers=1, quiet=True)
    w = result.whatif
    # from 1 instance at a quarter of the peak, out to ceil(45 x 60 / 1200) = 3 under the peak, back to 1
    assert (w["min_serving"], w["max_serving"], w["end_serving"]) == (1, 3, 1)
    assert w["settled_at_s"] > w["step_at_s"]
    assert w["failed_while_scaling"] > 0            # the SLO misses while new instances start and load
    assert 1 < w["mean_instances"] < 3
    from mmesim.plan.report import write_plan
    files = write_plan(result, tmp_path / "out")
    assert "autoscaling.png" in files and "Autoscaling what-if" in files["report.html"].read_text()


def test_plan_searches_triton_max_batch_where_the_profile_allows(tmp_path):
    """BERT TensorRT on a T4 executes 12 requests in 51 ms and one in 8: at 250 req/s, serving
    without batching needs twice the instances. A max batch above the profile's 12 is capped
    there (its timings stop at 12), so it plans exactly as 12 does."""
    data = {"name": "bert", "models": [{"name": "bert", "profile": "bert-base-uncased-tensorrt-t4", "copies": 4,
                                        "share": 1.0}],
            "traffic": {"peak_rps": 250}, "slo": {"p95_ms": 300, "max_error_rate": 0.001},
            "candidates": {"instance_types": ["ml.g4dn.xlarge"], "max_instances": 6, "max_batch_sizes": [1, 12, 64]},
            "simulation": {"duration_s": 40, "warmup_s": 10, "seed": 0}}
    mix, profiles = load_mix(_write(tmp_path, data))
    rows = {r["max_batch"]: r for r in plan(mix, profiles, workers=1, quiet=True).ranked}
    assert rows[1]["count"] >= 2 * rows[12]["count"]
    assert rows[64]["count"] == rows[12]["count"] and rows[64]["p95_ms"] == rows[12]["p95_ms"]
    assert {r["candidate"]: r["count"] for r in rows.values()} == exhaustive(mix, profiles)


def test_triton_config_of_a_candidate():
    from mmesim.plan.search import with_triton
    from mmesim.profile import load_profile
    p = load_profile("resnet50-pytorch-t4")                     # max batch 32, preferred 16
    two = with_triton(p, 8, 2)
    assert two.triton.max_batch_size == 8 and two.triton.preferred_batch_sizes == []
    assert two.triton.instance_count == 2 and two.gpu_memory_bytes == 2 * p.gpu_memory_bytes
    assert with_triton(p, 64, None).triton.max_batch_size == 32   # never above what was timed
    assert with_triton(p, None, None) is p
    unbatched = p.model_copy(update={"triton": p.triton.model_copy(update={"max_batch_size": 0,
                                                                          "preferred_batch_sizes": []})})
    assert with_triton(unbatched, 8, None).triton.max_batch_size == 0
