"""Calibration arithmetic without a server: decode fit, batch sizes, sizes, the max-models rule."""

from __future__ import annotations

import pytest

from mmesim.calibrate.handoff import sequential_handoff_s
from mmesim.calibrate.latency import RequestPoint, ServicePoint, batch_sizes, decode_cost, request_cost, steady
from mmesim.calibrate.maxmodels import max_models_loaded
from mmesim.calibrate.memory import MemorySample, parse_bytes
from mmesim.calibrate.run import CalibrateOptions, catalog_key
from mmesim.errors import ConfigError, MissingPiece
from mmesim.triton.client import MMEError
from mmesim.units import MiB


def test_batch_sizes_are_powers_of_two_up_to_max():
    assert batch_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]
    assert batch_sizes(1) == [1]


def test_warm_once_executions_stop_getting_faster():
    """The warm-up rule: five executions' median no more than 5 % below the five before's."""
    after_idle = [13.4, 2.4, 2.0, 2.6, 1.6, 1.8, 1.4, 1.3, 1.4, 1.4]      # tiny-bert's stub, 15 s idle
    assert not steady(after_idle[:9])                                  # fewer than two windows
    assert not steady(after_idle)                                      # 1.4 against 2.4: still falling
    assert not steady(after_idle + [1.3, 1.2, 1.3, 1.4, 1.3])          # 1.3 against 1.4: 7 % faster
    assert steady(after_idle + [1.4, 1.3, 1.4, 1.35, 1.3])             # 1.35 against 1.4: within 5 %
    assert steady([1.0] * 5 + [1.2] * 5)                               # slower is not colder


def test_decode_cost_is_the_slope_per_byte():
    points = [ServicePoint(1, 1000, [0.01], overhead_s=[0.001 + 1000 * 2e-8]),
              ServicePoint(4, 4000, [0.02], overhead_s=[0.001 + 4000 * 2e-8])]
    per_byte, fixed = decode_cost(points)
    assert per_byte == pytest.approx(2e-8) and fixed == pytest.approx(0.001)


def test_request_cost_keeps_the_fixed_part_and_ignores_one_slow_request():
    points = [RequestPoint(1, 1000, server_cpu_s=[0.0005 + 1000 * 1e-8] * 4 + [0.5], overhead_s=[0.002] * 5),
              RequestPoint(8, 8000, server_cpu_s=[0.0005 + 8000 * 1e-8] * 5, overhead_s=[0.003] * 5)]
    per_byte, fixed, how = request_cost(points)
    assert how == "server process CPU"
    assert per_byte == pytest.approx(1e-8) and fixed == pytest.approx(0.0005)
    # without the server's CPU (a container), the round trip beyond Triton's own time
    for p in points:
        p.server_cpu_s = []
    per_byte, fixed, how = request_cost(points)
    assert how.startswith("round trip") and fixed == pytest.approx(0.002 - 1000 * per_byte)


def test_quick_is_a_smaller_run():
    quick, full = CalibrateOptions("tiny-mlp", quick=True), CalibrateOptions("tiny-mlp", device="cuda")
    assert full.scaling == [1, 2, 4, 8] and quick.scaling == [1, 2]
    assert quick.repeats < full.repeats and max(quick.concurrency) <= 2
    assert quick.stop_batch_s < full.stop_batch_s


def test_parse_bytes():
    assert parse_bytes("4GiB") == 4 * 2**30 and parse_bytes("512MiB") == 512 * MiB and parse_bytes("1e9") == 10**9
    with pytest.raises(ConfigError, match="memory-budget"):
        parse_bytes("lots")


def test_max_models_rule_of_the_reference():
    # baseline 1000 MiB + 1000 MiB per copy of 10000 MiB: after 4 copies used = 5000, average 1250,
    # (5000 + 1250) / 10000 = 0.625; after 7: used 8000, (8000 + 1143) / 10000 = 0.914 >= 0.9 -> stop at 7
    loaded = []

    def load(i):
        loaded.append(i)
        return 1.0

    result = max_models_loaded(load, lambda: MemorySample((1000 + 1000 * len(loaded)) * MiB, 10000 * MiB), 0.9)
    assert result.count == 7 and result.stopped_by == "threshold"
    assert [s.models for s in result.trace] == list(range(1, 8))


def test_max_models_stops_on_out_of_memory():
    def load(i):
        if i == 3:
            raise MMEError("POST", "/models", 507, "CUDA out of memory")
        return 1.0
    result = max_models_loaded(load, lambda: MemorySample(MiB, 100 * MiB), 0.9)
    assert result.count == 3 and result.stopped_by == "out of memory (507)"


def test_gpu_names_map_to_catalogue_keys():
    assert catalog_key("Tesla T4", 15 * 2**30) == "t4"
    assert catalog_key("NVIDIA L40S", 45 * 2**30) == "l40s"
    assert catalog_key("NVIDIA L4", 22 * 2**30) == "l4"
    assert catalog_key("NVIDIA A100-SXM4-80GB", 80 * 2**30) == "a100-80gb"
    assert catalog_key("NVIDIA A100-SXM4-40GB", 40 * 2**30) == "a100-40gb"
    assert catalog_key("NVIDIA H200", 141 * 2**30) == "h200"
    assert catalog_key("NVIDIA L40", 45 * 2**30) is None          # not the L40S
    assert catalog_key("NVIDIA GeForce RTX 4090", 24 * 2**30) is None


@pytest.mark.parametrize("kwargs, error, message", [
    ({"framework": "tf"}, ConfigError, "--framework"),
    ({"device": "tpu"}, ConfigError, "--device"),
    ({"threshold": 1.5}, ConfigError, "--threshold"),
    ({"runner": "k8s"}, ConfigError, "--runner"),
    ({"framework": "tensorrt"}, MissingPiece, "NVIDIA GPU"),
    ({"scaling": [2, 4]}, ConfigError, "--scaling"),
    ({"stop_batch_s": 0}, ConfigError, "--stop-batch-s"),
    ({"warmth_s": -1}, ConfigError, "--warmth-s"),
    ({"warmth_s": float("nan")}, ConfigError, "--warmth-s"),
    ({"placement_s": -1}, ConfigError, "--placement-s"),
])
def test_bad_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        CalibrateOptions("tiny-mlp", **kwargs).check()


@pytest.mark.parametrize("model, message", [("tiny-bret", "not a built-in model"), ("net.onnx", "no such model file")])
def test_a_model_that_is_not_there_is_refused_before_any_server_starts(model, message):
    with pytest.raises(ConfigError, match=message):
        CalibrateOptions(model).check()


@pytest.mark.parametrize("cores,threads,want", [(2, 1, [1, 2, 4]), (2, None, [1, 2]), (4, 1, [1, 2, 4, 8]),
                                                (16, 4, [1, 2, 4, 8]), (8, 8, [1, 2])])
def test_copies_at_once_on_a_cpu_stop_past_the_cores(monkeypatch, cores, threads, want):
    """One-thread copies fill a 2-core host at 2: k = 8 would load four more copies to read the
    same ceiling; copies using every core saturate alone. An explicit --scaling is kept."""
    monkeypatch.setattr("mmesim.calibrate.run.host_cores", lambda: cores)
    assert CalibrateOptions("tiny-mlp", cpu_threads=threads).scaling == want
    assert CalibrateOptions("tiny-mlp", cpu_threads=threads, scaling=[1, 8]).scaling == [1, 8]


def test_handoff_is_triton_wall_beyond_the_stub_cpu_one_at_a_time():
    """Median per execution at the smallest batch (one slow repeat does not move it); 0 where
    the stub's CPU was not read (GPU, native backends)."""
    one = ServicePoint(1, 100, compute_s=[1.10e-3, 1.05e-3, 9.0e-3], cpu_s=[1.0e-3, 1.0e-3, 1.0e-3])
    two = ServicePoint(2, 200, compute_s=[5e-3], cpu_s=[1e-3])
    assert sequential_handoff_s([one, two]) == pytest.approx(0.1e-3)
    assert sequential_handoff_s([ServicePoint(1, 100, compute_s=[2e-3])]) == 0.0
    assert sequential_handoff_s([]) == 0.0


def test_a_failure_waits_for_the_cause_triton_logs_after_it_answers():
    """Triton may write the stub's traceback after its error reply (later on a busy machine):
    a failure reads the log once it has stopped growing, not at the first look."""
    import threading
    import time

    from mmesim.triton.server import TritonServer

    class Logging(TritonServer):
        lines = ["I sagemaker_server.cc] Invoking SageMaker TargetModel: raiser"]
        _launch = _terminate = _kill = lambda self: None
        _alive = lambda self: True                                    # noqa: E731
        _wait_exit = lambda self, timeout_s: True                     # noqa: E731

        def log_tail(self, lines=40):
            return "\n".join(self.lines[-lines:])

    server = Logging()
    threading.Timer(0.4, lambda: server.lines.append(
        "E pb_stub.cc] Failed to process the request(s): ValueError: the model raised this\\n\\nAt:\\n  model.py(6): execute")).start()
    t0 = time.monotonic()
    text = str(server.failure("invoking raiser", RuntimeError("400")))
    assert "ValueError: the model raised this\n    \n    At:\n      model.py(6): execute" in text
    assert time.monotonic() - t0 >= 0.4                               # it waited for the late line
