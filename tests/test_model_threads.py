"""tritonserver's own CPU on a model's threads (the Python backend's messages to its stub):
inside the execution's measured time, so on a host's shared cores it takes cores beside the
execution, not a turn on the request's path; on a GPU instance it counts with the request's
handling on the vCPUs, as it did before calibrate read it apart."""

import pytest

from conftest import make_profile
from mmesim.endpoint import EndpointConfig
from mmesim.sim import Simulation
from mmesim.workload import Workload


def _cores(monkeypatch, n):
    import mmesim.catalog
    monkeypatch.setattr(mmesim.catalog, "host_cores", lambda: n)


def _alone(tmp_path, instance, **kw) -> float:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n1,m-v0\n")
    p = make_profile(name="m", gpu="cpu", s1=0.1, max_batch=1, mem_mib=100, baseline_mib=100, cpu_threads=1,
                     request_overhead_s=0.01, **kw)
    run = Simulation([p], EndpointConfig(instance_type=instance), Workload(kind="trace", trace=str(path)), [1]).run(5)
    (r,) = run.records
    return r.end - r.start


def test_on_shared_cores_the_model_threads_run_beside_the_execution(tmp_path, monkeypatch):
    _cores(monkeypatch, 2)
    assert _alone(tmp_path, "local", model_thread_s=0.1) == pytest.approx(_alone(tmp_path, "local"), rel=1e-6)
    _cores(monkeypatch, 1)             # one core: they share it with the stub, whose 100 ms take 200
    assert _alone(tmp_path, "local", model_thread_s=0.1) == pytest.approx(_alone(tmp_path, "local") + 0.1, rel=1e-6)


def test_on_a_gpu_instance_they_count_with_the_requests_handling(tmp_path):
    base = _alone(tmp_path, "ml.g4dn.xlarge")
    assert _alone(tmp_path, "ml.g4dn.xlarge", model_thread_s=0.02) == pytest.approx(base + 0.02, rel=1e-3)
