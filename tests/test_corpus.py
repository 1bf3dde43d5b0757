"""The DeepLearningExamples corpus: copied with its sources, and a fit that predicts a GPU it
never saw (leave one GPU out)."""

import csv
import re
from importlib import resources

import pytest

from mmesim.catalog import load_catalog
from mmesim.derive import corpus


def test_every_row_names_its_source_and_commit_and_is_self_consistent():
    text = resources.files("mmesim.derive").joinpath(corpus.CORPUS).read_text()
    raw = list(csv.DictReader(text.splitlines()))
    assert len(raw) == 78
    for r in raw:
        assert r["source_file"].startswith(("PyTorch/", "TensorFlow")) and r["source_file"].endswith("README.md")
        assert re.fullmatch(r"[0-9a-f]{40}", r["source_commit"])
        # one request of `batch` items in flight: its latency is batch / throughput (a mistyped
        # number breaks this; the published figures agree within 4 %)
        b, x, avg = int(r["batch"]), float(r["inferences_per_s"]), float(r["avg_ms"])
        assert avg == pytest.approx(1000 * b / x, rel=0.04), r


def test_online_rows_obey_littles_law():
    """ResNet-50 online (dynamic batching, 16-256 concurrent requests of one image): requests in
    flight = throughput x average latency, to 2 %, on all 64 copied rows."""
    text = resources.files("mmesim.derive").joinpath("reference/dle/triton-online.csv").read_text()
    raw = list(csv.DictReader(text.splitlines()))
    assert len(raw) == 64 and {r["gpu"] for r in raw} == {"t4", "v100", "a40", "a100-80gb"}
    for r in raw:
        assert re.fullmatch(r"[0-9a-f]{40}", r["source_commit"])
        in_flight = float(r["inferences_per_s"]) * float(r["avg_ms"]) / 1000
        assert in_flight == pytest.approx(int(r["concurrency"]), rel=0.02), r


def test_corpus_gpus_are_in_the_catalogue_with_cited_figures():
    cat = load_catalog()
    for key in {r.gpu for r in corpus.rows()} | {"a100-40gb", "h100", "h200"}:
        g = cat.gpu(key)
        assert g.sms and g.fp16_tflops > g.fp32_tflops and g.bandwidth_gbs > 0 and g.sources, key


def test_leave_one_gpu_out_meets_the_target():
    preds = corpus.leave_one_gpu_out()
    assert {p.row.gpu for p in preds} == {"t4", "v100", "a30", "a40", "a100-80gb"}
    assert len(preds) == 78         # every row has a family seen on three other GPUs
    assert corpus.median_abs(preds, "latency") <= corpus.TARGET
    assert corpus.median_abs(preds, "throughput") <= corpus.TARGET


def test_batching_gains_grow_with_gpu_size_on_a_gpu_the_fit_never_saw():
    """BERT-large in TensorRT gains 5 % from batch 1 to 16 on the 40-SM T4 and 98 % on the
    108-SM A100; fitted without the A100, the model still gives the A100 the larger gain."""
    rows = [r for r in corpus.rows() if r.model == "bert-large" and r.engine == "TensorRT"]
    fit = corpus.fit([r for r in rows if r.gpu != "a100-80gb"])
    cat = load_catalog()
    gain = {g: (16 / fit.seconds(cat.gpu(g), 16)) / (1 / fit.seconds(cat.gpu(g), 1)) for g in ("t4", "a100-80gb")}
    assert gain["t4"] < 1.3 < 1.6 < gain["a100-80gb"]


def test_a_profile_measured_on_a_gpu_no_instance_has_translates_to_catalogue_instances():
    """A100, H100 and H200 have no MME instance type: a profile measured there translates like
    any other. Checked where the corpus allows it: BERT-large TensorRT measured on the A100
    predicts the T4's published execution times within 25 % (its traffic and fill figures are
    fitted on the V100, A30 and T4 rows: with four GPUs in the family, leaving out both the
    A100 and the T4 would leave five figures to two GPUs)."""
    from mmesim.sim.translate import translate

    cat = load_catalog()
    assert not any(i.gpu in ("a100-80gb", "h100", "h200") for i in cat.instances.values())
    family = [r for r in corpus.rows() if r.model == "bert-large" and r.engine == "TensorRT"]
    a100 = corpus.measured_profile(family, "a100-80gb")
    on_t4 = translate(a100, cat.instance("ml.g4dn.2xlarge"))
    assert on_t4.gpu == "t4" and on_t4.provenance.method == "translated"
    published = {r.batch: r.latency_s for r in family if r.gpu == "t4"}
    for timing in on_t4.service:
        assert timing.seconds == pytest.approx(published[timing.batch], rel=0.25), timing
    # a slower GPU, never faster; the same profile moved to an H200 host and back is unchanged
    assert all(t.seconds > s.seconds for t, s in zip(on_t4.service, a100.service))
    h200_host = cat.instance("ml.g5.2xlarge").model_copy(update={"name": "h200-host", "gpu": "h200"})
    on_h200 = translate(on_t4, h200_host)
    back = translate(on_h200, cat.instance("ml.g4dn.2xlarge"))
    assert [t.seconds for t in back.service] == pytest.approx([t.seconds for t in on_t4.service], rel=1e-9)
    assert on_h200.service[-1].seconds < a100.service[-1].seconds       # 4.8 TB/s against 2.0


def test_shipped_translation_figures_are_what_the_corpus_fit_gives():
    import json

    shipped = json.loads(resources.files("mmesim.derive").joinpath(corpus.FITTED).read_text())
    assert corpus.translation_figures() == shipped
    # transformer engines move fewer bytes per FLOP in TensorRT than in TorchScript
    assert shipped["tensorrt/transformer"]["flops_per_activation_byte"] > shipped["pytorch/transformer"]["flops_per_activation_byte"]


def test_the_cli_predicts_a_catalogue_instance_from_an_a100_profile_file(tmp_path):
    import json
    import subprocess
    import sys

    family = [r for r in corpus.rows() if r.model == "bert-large" and r.engine == "TensorRT"]
    path = tmp_path / "a100.json"
    corpus.measured_profile(family, "a100-80gb").save(path)
    out = {}
    for inst in ("ml.g4dn.2xlarge", "ml.g5.2xlarge"):
        done = subprocess.run([sys.executable, "-m", "mmesim", "simulate", "--profile", str(path), "--instance", inst,
                               "--json"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        out[inst] = json.loads(done.stdout)
        assert out[inst]["gpu_memory_utilization_peak"] <= 0.9
    # the A10G has 1.5x the T4's memory and 1.9x its bandwidth: more copies, more throughput
    assert out["ml.g5.2xlarge"]["max_models_loaded"] > out["ml.g4dn.2xlarge"]["max_models_loaded"]
    assert out["ml.g5.2xlarge"]["throughput_qps"] > 1.3 * out["ml.g4dn.2xlarge"]["throughput_qps"]


def test_torchscript_launch_overlaps_gpu_work_in_translation():
    """The corpus's TorchScript rows: "compute infer" (launching kernels, 7.3-13.6 ms for
    BERT-large whatever the batch) overlaps the GPU's work. A batch-1 execution whose GPU work
    hides under its launch keeps its time on a faster GPU (only the CPU moves it); one without
    a launch figure sheds its GPU share. Either way a round trip changes nothing."""
    from mmesim.profile import load_profile
    from mmesim.sim.translate import translate

    assert corpus.launch_per_layer(corpus.rows()) == pytest.approx(0.0091 / 24, rel=0.01)
    cat = load_catalog()
    base = load_profile("bert-base-uncased-pytorch-t4")
    assert base.work.launch_s == pytest.approx(12 * corpus.launch_per_layer(corpus.rows()), rel=0.01)
    g5, g4 = cat.instance("ml.g5.2xlarge"), cat.instance("ml.g4dn.2xlarge")
    s1 = base.service[0].seconds
    with_launch = base.model_copy(update={"host_share": 0.7, "work": base.work.model_copy(update={"launch_s": 0.8 * s1})})
    without = with_launch.model_copy(update={"work": base.work.model_copy(update={"launch_s": 0.0})})
    # 20 % serial host, 80 % launch hiding 30 % GPU work: the A10G's faster GPU changes only the CPU part
    assert translate(with_launch, g5).service[0].seconds == pytest.approx(s1 * g4.cpu_speed / g5.cpu_speed)
    assert translate(without, g5).service[0].seconds < 0.85 * s1
    for p in (with_launch, without):
        back = translate(translate(p, g5), g4)
        assert [t.seconds for t in back.service] == pytest.approx([t.seconds for t in p.service], rel=1e-9)
