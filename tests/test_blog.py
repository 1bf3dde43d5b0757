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
    assert blog.split(fit.profile, ROWS) == load_profile("bert-base-uncased-tensorrt-t4")
    shipped_all = [load_profile(p) for p in builtin_profiles().values()]
    assert blog.with_shares(shipped_all) == shipped_all
    assert load_workload("blog").generator == blog.generator()


def test_host_gpu_split_uses_one_gpus_rows_only():
    """The split of a T4 profile reads only T4 rows: change every A10G row and it stays."""
    p = load_profile("roberta-large-pytorch-t4")
    other = [dict(r, throughput_qps=r["throughput_qps"] * 3) if r["gpu"] == "A10G" else r for r in ROWS]
    assert blog.split(p, other) == blog.split(p, ROWS)
    # and it follows the evidence of its own GPU: a faster best row on the T4 means a
    # higher attainable FLOP rate, so less of this profile's time is GPU work
    faster = [dict(r, throughput_qps=r["throughput_qps"] * 2) if blog.profile_name(r) == "vit_large_patch16_224-pytorch-t4"
              else r for r in ROWS]
    assert blog.split(p, faster).busy_host_share > blog.split(p, ROWS).busy_host_share


def test_model_flops_match_a_framework_count():
    """The architecture counts agree with PyTorch's own FLOP counter on BERT-base, seq 128."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode
    from mmesim.derive.architectures import ARCHITECTURES
    model = transformers.BertModel(transformers.BertConfig()).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 128, dtype=torch.long))
    ours = ARCHITECTURES["bert-base-uncased"]()
    # PyTorch's counter leaves out the fused attention products (2 x 128^2 x 768 x 12 MACs)
    assert 2 * ours.macs == pytest.approx(fc.get_total_flops() + 2 * 2 * 128 * 128 * 768 * 12, rel=0.02)
    assert ours.params + ours.lookup_params == pytest.approx(sum(p.numel() for p in model.parameters()), rel=0.01)


def test_v100_is_predicted_by_translation():
    s = summarize(simulate([load_profile("resnet50-pytorch-t4")], EndpointConfig(instance_type="ml.p3.2xlarge"),
                           load_workload("blog"), seed=0))
    # 16160 MiB reported vs 15109 on T4, same bytes a copy: a few more copies fit
    assert 46 < s.max_models_loaded <= 52
    # the figures are the reference's: a user step of its workload, and a throughput of the
    # same order as the T4's published 120 req/s (same model and CPU class, a faster GPU)
    assert s.max_concurrent_users in load_workload("blog").user_steps
    t4 = next(r for r in ROWS if blog.profile_name(r) == "resnet50-pytorch-t4")
    assert 0.5 < s.throughput_qps / t4["throughput_qps"] < 2 and 0.5 < s.latency_ms / t4["latency_ms"] < 2
    assert any("translated" in w for w in s.warnings)
