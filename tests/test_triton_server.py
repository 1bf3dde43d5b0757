"""The local Triton runner and the SageMaker MME protocol against the real tritonserver."""

from __future__ import annotations

import socket
import statistics
from pathlib import Path

import pytest

pytest.importorskip("tritonclient")
psutil = pytest.importorskip("psutil")

from mmesim.calibrate.latency import measure_requests, measure_service, request_cost, stub_pid  # noqa: E402
from mmesim.calibrate.memory import HostMemory, model_stubs, settle_unload  # noqa: E402
from mmesim.errors import MissingPiece  # noqa: E402
from mmesim.triton.args import Ports, ServerOptions  # noqa: E402
from mmesim.triton.client import MMEClient, MMEError, kserve_client  # noqa: E402
from mmesim.triton.local import LocalTriton  # noqa: E402
from mmesim.triton.packaging import package, package_null  # noqa: E402
from mmesim.triton.server import ServerError  # noqa: E402

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    return {"mlp": package("tiny-mlp", "python", root / "mlp"), "cnn": package("tiny-cnn", "python", root / "cnn", cpu_threads=1)}


@pytest.fixture(scope="module")
def server(triton_server):
    return triton_server


@pytest.fixture(scope="module")
def mme(server):
    client = MMEClient(server.sagemaker_url)
    yield client
    client.close()


def _load(server, mme, packaged, name):
    url = packaged.extract(Path(server.workdir) / "models" / name)
    return mme.load(name, server.model_url(url))


def test_sagemaker_protocol_load_list_get_invoke_unload(server, mme, artifacts):
    assert mme.ping()
    seconds = _load(server, mme, artifacts["mlp"], "mlp-a")
    assert seconds > 0
    with pytest.raises(MMEError) as again:
        _load(server, mme, artifacts["mlp"], "mlp-a")
    assert again.value.status == 409
    assert "mlp-a" in [m["modelName"] for m in mme.list()]
    assert mme.get("mlp-a")["modelName"] == "mlp-a"
    answer = mme.invoke("mlp-a", artifacts["mlp"].spec.request_body(3)).json()
    assert answer["outputs"][0]["shape"] == [3, 10]
    mme.unload("mlp-a")
    assert "mlp-a" not in [m["modelName"] for m in mme.list()]
    with pytest.raises(MMEError) as gone:
        mme.invoke("mlp-a", artifacts["mlp"].spec.request_body(1))
    assert gone.value.status == 404


def test_memory_per_copy_is_positive_and_consistent(server, mme, artifacts):
    probe = HostMemory(server.pid)
    own = []
    for name in ("mlp-m0", "mlp-m1"):
        before = probe.sample()
        _load(server, mme, artifacts["mlp"], name)
        after = probe.sample()
        new = set(after.processes) - set(before.processes)
        assert new, "a Python-backend model runs in a process of its own"
        own.append(sum(after.processes[p] for p in new))
    assert min(own) > 10 * 2**20
    assert abs(own[0] - own[1]) / statistics.fmean(own) < 0.15
    for name in ("mlp-m0", "mlp-m1"):
        mme.unload(name)


def test_an_unload_is_over_once_its_stub_has_exited(server, mme, artifacts):
    """Triton answers the DELETE before the model's stub has exited; calibrate reads memory
    only after ``settle_unload``. Each copy's stub is found by its instance name, and a name
    that begins another's finds its own stub only."""
    for name in ("mlp-s1", "mlp-s10"):
        _load(server, mme, artifacts["mlp"], name)
    one, ten = (model_stubs(server.pid, [name]) for name in ("mlp-s1", "mlp-s10"))
    assert len(one) == len(ten) == 1 and one[0].pid != ten[0].pid
    assert {p.pid for p in model_stubs(server.pid, ["mlp-s1", "mlp-s10"])} == {one[0].pid, ten[0].pid}
    mme.unload("mlp-s1")
    settle_unload(one)
    assert not one[0].is_running() or one[0].status() == psutil.STATUS_ZOMBIE
    assert ten[0].is_running() and ten[0].status() != psutil.STATUS_ZOMBIE      # the other copy serves on
    mme.unload("mlp-s10")
    assert model_stubs(server.pid, ["mlp-s1"]) == [] and model_stubs(None, ["mlp-s10"]) == []


def test_execution_time_grows_with_batch(server, mme, artifacts):
    _load(server, mme, artifacts["cnn"], "cnn")
    kserve = kserve_client(server.http_url)
    try:
        points = measure_service(mme, kserve, "cnn", artifacts["cnn"].spec, [1, 16], repeats=5)
    finally:
        kserve.close()
    small, large = (statistics.median(p.compute_s) for p in points)
    assert large > 1.5 * small
    mme.unload("cnn")


def test_binary_and_json_bodies_give_the_same_answer(server, mme, artifacts):
    _load(server, mme, artifacts["mlp"], "mlp-b")
    spec = artifacts["mlp"].spec
    body, ctype = spec.binary_body(3, seed=5)
    assert len(body) < len(spec.request_body(3, seed=5))
    as_binary = mme.invoke("mlp-b", body, ctype).json()["outputs"][0]
    as_json = mme.invoke("mlp-b", spec.request_body(3, seed=5)).json()["outputs"][0]
    assert as_binary["shape"] == [3, 10] and as_binary["data"] == pytest.approx(as_json["data"], rel=1e-5)
    mme.unload("mlp-b")


def test_one_thread_execution_work_and_the_sweep_stop(server, mme, artifacts):
    """The one-thread stub's CPU per execution is its work: never more than Triton's wall
    clock (plus noise), and a sweep stops once a batch takes longer than asked."""
    _load(server, mme, artifacts["cnn"], "cnn-s")
    kserve = kserve_client(server.http_url)
    try:
        stub = stub_pid(server.pid, "cnn-s")
        assert stub is not None
        points = measure_service(mme, kserve, "cnn-s", artifacts["cnn"].spec, [1, 4, 16], repeats=3, stub=stub)
        assert [p.batch for p in points] == [1, 4, 16]
        for p in points:
            assert 0 < p.mean_s <= 1.2 * p.wall_s
        stopped = measure_service(mme, kserve, "cnn-s", artifacts["cnn"].spec, [1, 4, 16], repeats=2,
                                  stop_after_s=points[0].wall_s / 100)
        assert [p.batch for p in stopped] == [1]
    finally:
        kserve.close()
        mme.unload("cnn-s")


def test_server_cost_per_request_grows_with_the_json_body(server, mme, artifacts):
    # tiny-cnn's JSON bodies: ~250 KB for one image, ~4 MB for sixteen; parsing the larger costs
    # the server milliseconds, well above what a busy machine adds to one request's share
    _load(server, mme, artifacts["cnn"], "cnn-r")
    kserve = kserve_client(server.http_url)
    try:
        points = measure_requests(mme, kserve, "cnn-r", artifacts["cnn"].spec, [1, 16], server.pid, requests=6)
    finally:
        kserve.close()
        mme.unload("cnn-r")
    per_byte, fixed, how = request_cost(points)
    assert how == "server process CPU"
    # ordering only: the idle CPU subtracted grows with each round trip's wall-clock time
    small, large = (statistics.median(p.server_cpu_s) for p in points)
    assert small < large and per_byte > 0 and fixed >= 0


def test_broken_model_is_refused_with_its_error(server, mme, tmp_path):
    broken = package_null(tmp_path / "broken")
    (broken.directory / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('weights are corrupt')\n")
    import tarfile
    with tarfile.open(broken.artifact, "w:gz") as tar:
        tar.add(broken.directory, arcname="null")
    with pytest.raises(MMEError) as err:
        _load(server, mme, broken, "broken")
    assert err.value.status == 400
    assert "weights are corrupt" in str(err.value)


def test_a_free_port_taken_before_triton_binds_it_is_chosen_again(monkeypatch):
    """Free ports are picked, then bound by Triton seconds later; another process taking one
    in between makes Triton exit during start-up, and start() launches it on fresh ones."""
    import mmesim.triton.server as server_module
    real = server_module.free_ports
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))         # Triton binds its ports on loopback too
        taken.listen()
        port = taken.getsockname()[1]
        picked = []

        def first_one_taken() -> Ports:
            ports = real()
            picked.append(ports if picked else Ports(sagemaker=port, http=ports.http, metrics=ports.metrics))
            return picked[-1]
        monkeypatch.setattr(server_module, "free_ports", first_one_taken)
        with LocalTriton() as s:
            assert len(picked) == 2 and s.ports == picked[1] and s.ports.sagemaker != port
            client = MMEClient(s.sagemaker_url)
            assert client.ping()
            client.close()


def test_stop_leaves_no_process_behind(tmp_path):
    null = package_null(tmp_path / "null")
    with LocalTriton() as s:
        client = MMEClient(s.sagemaker_url)
        client.load("null", s.model_url(null.extract(tmp_path / "models" / "null")))
        tree = [s.pid] + [c.pid for c in psutil.Process(s.pid).children(recursive=True)]
        assert len(tree) >= 2          # server + the model's stub
        client.close()
    for pid in tree:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_missing_binary_says_what_to_do(tmp_path):
    with pytest.raises(MissingPiece, match="tritonserver binary .* does not exist"):
        LocalTriton(binary=tmp_path / "tritonserver")


def test_port_in_use_is_named():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(ServerError, match=f"port.*{busy}.*already in use"):
            LocalTriton(ports=Ports(sagemaker=busy, http=busy + 1 if busy < 65535 else busy - 1, metrics=0)).start()


def test_failed_start_shows_the_log():
    with pytest.raises(ServerError, match="exited during start-up(.|\n)*log"):
        LocalTriton(ServerOptions(extra_args=("--model-control-mode=nonsense",)), ready_timeout_s=30).start()


def test_a_warm_up_batch_is_run_by_triton_at_load(server, mme, tmp_path):
    """The model_warmup block mmesim writes (TensorRT's default) is one Triton accepts and runs:
    one execution at the warm-up batch before any request was sent."""
    warm = package("tiny-mlp", "python", tmp_path / "warm", warmup_batch=4)
    _load(server, mme, warm, "mlp-warm")
    client = kserve_client(server.http_url)
    stats = client.get_inference_statistics("mlp-warm")["model_stats"][0]
    client.close()
    mme.unload("mlp-warm")
    assert stats["execution_count"] == 1
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in stats["batch_stats"]] == [(4, 1)]
