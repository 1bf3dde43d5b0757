"""The built-in profiles: derived by shipped code from the published load test, and the
simulator reproduces the published rows from them."""

import pytest

from mmesim.derive import blog
from mmesim.endpoint import EndpointConfig
from mmesim.profile import ModelProfile, builtin_profiles, load_profile
from mmesim.results.summary import summarize
from mmesim.sim import max_models_loaded, simulate
from mmesim.units import MiB
from mmesim.workload import load_workload

ROWS = blog.reference_rows()


def test_every_reference_row_has_a_builtin_profile_that_says_how_it_was_made():
    names = builtin_profiles()
    for row in ROWS:
        p = load_profile(blog.profile_name(row))
        assert p.provenance.method == "derived" and "blog" in p.provenance.source
        assert "load" in p.provenance.notes           # the rules for unpublished figures are stated
    assert len(names) == len(ROWS) == 20


def test_memory_derivation_by_hand():
    # T4 trace: 8.02 % of 15109 MiB after one copy, +268 MiB a copy
    assert blog.baseline_bytes() / MiB == pytest.approx(0.0802 * 15109 - 268)
    m = blog.per_copy_bytes(46, 15109 * MiB, blog.baseline_bytes()) / MiB
    assert 268 < m < 275


@pytest.mark.parametrize("row", ROWS, ids=blog.profile_name)
def test_max_models_loaded_is_exact(row):
    counts, _ = max_models_loaded([load_profile(blog.profile_name(row))], EndpointConfig(instance_type=row["instance_type"]))
    assert counts == [row["max_models_loaded"]]


@pytest.mark.parametrize("row", ROWS, ids=blog.profile_name)
def test_reference_rows_reproduce(row):
    """Latency and throughput within 10 %, max concurrent users exact (seed 0)."""
    s = summarize(simulate([load_profile(blog.profile_name(row))], EndpointConfig(instance_type=row["instance_type"]),
                           load_workload("blog"), seed=0))
    assert s.max_models_loaded == row["max_models_loaded"]
    assert s.latency_ms == pytest.approx(row["latency_ms"], rel=0.10)
    assert s.throughput_qps == pytest.approx(row["throughput_qps"], rel=0.10)
    assert s.max_concurrent_users == row["max_concurrent_users"]


def test_shipped_profile_is_what_the_code_derives():
    row = next(r for r in ROWS if blog.profile_name(r) == "bert-base-uncased-tensorrt-t4")
    fit = blog.fit_row(row, blog.generator())
    shipped = load_profile("bert-base-uncased-tensorrt-t4")
    assert fit.profile == shipped.model_copy(update={"host_share": 0.0})   # the split needs both GPUs' fits
    shipped_all = [load_profile(p) for p in builtin_profiles().values()]
    assert blog.with_host_shares(shipped_all) == shipped_all
    assert load_workload("blog").generator == blog.generator()


def test_host_share_split_by_hand():
    """Same batch-1 time on both GPUs: all host-bound; scaling exactly like the GPU: none."""
    from mmesim.sim.translate import compute_ratio
    from mmesim.catalog import load_catalog
    c = load_catalog()
    r = compute_ratio(c.gpu("t4"), c.gpu("a10g"), "pytorch")
    base = load_profile("resnet50-pytorch-t4").to_dict()
    t4 = ModelProfile.model_validate({**base, "service": [{"batch": 1, "seconds": 0.02}], "host_cpu_speed": 1.0})
    for s_a10g, expect in ((0.02 / 1.05, 1.0), (0.02 * r, 0.0), (0.5 * 0.02 / 1.05 + 0.5 * 0.02 * r, 0.5)):
        a10g = ModelProfile.model_validate({**base, "name": "resnet50-pytorch-a10g", "gpu": "a10g", "host_cpu_speed": 1.05,
                                            "service": [{"batch": 1, "seconds": s_a10g}]})
        assert blog.host_shares([t4, a10g])["resnet50-pytorch-t4"] == pytest.approx(expect, abs=1e-3)


def test_v100_is_predicted_by_translation():
    s = summarize(simulate([load_profile("resnet50-pytorch-t4")], EndpointConfig(instance_type="ml.p3.2xlarge"),
                           load_workload("blog"), seed=0))
    # 16160 MiB reported vs 15109 on T4, same bytes a copy: a few more copies fit
    assert 46 < s.max_models_loaded <= 52
    assert s.latency_ms and s.throughput_qps and s.max_concurrent_users
    assert any("translated" in w for w in s.warnings)
