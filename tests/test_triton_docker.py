"""The Docker runner at the SDK boundary: a fake client stands in for the engine."""

from __future__ import annotations

import shlex

import pytest

docker = pytest.importorskip("docker")

from mmesim.errors import MissingPiece  # noqa: E402
from mmesim.triton.args import Ports  # noqa: E402
from mmesim.triton.docker import CONTAINER_MODELS, DockerTriton, docker_client  # noqa: E402
from mmesim.triton.server import ServerError  # noqa: E402


class FakeContainer:
    def __init__(self, status="running", logs=b"I tritonserver started\n"):
        self.status, self._logs = status, logs
        self.calls: list[str] = []

    def reload(self):
        self.calls.append("reload")

    def stop(self, timeout=10):
        self.calls.append(f"stop({timeout})")
        self.status = "exited"

    def wait(self, timeout=None):
        self.calls.append("wait")
        return {"StatusCode": 0}

    def remove(self, force=False):
        self.calls.append("remove")

    def kill(self):
        self.calls.append("kill")

    def logs(self, tail=40):
        return self._logs


class FakeContainers:
    def __init__(self, container):
        self.container, self.kwargs = container, None

    def run(self, **kwargs):
        self.kwargs = kwargs
        return self.container


class FakeClient:
    def __init__(self, container=None):
        self.containers = FakeContainers(container or FakeContainer())

    def ping(self):
        return True


PORTS = Ports(sagemaker=18080, http=18000, metrics=18002)


def _tritonserver(command: list[str]) -> tuple[list[str], list[str]]:
    """(what runs before tritonserver, tritonserver's own arguments) of a container command,
    read as the container's shell reads it."""
    words = shlex.split(command[-1]) if command[:2] == ["bash", "-c"] else list(command)
    at = words.index("tritonserver")
    return words[:at], words[at + 1:]


def _flags(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def test_the_container_is_reachable_where_the_runner_looks_and_finds_its_models(tmp_path):
    """What the container is given must fit together: the ports tritonserver listens on inside
    are the ones published to the host ports the runner's clients use; the model repository
    and every model URL lie inside the mounted folder; the GPU asked for is the one named."""
    client = FakeClient()
    server = DockerTriton(tmp_path, ports=PORTS, image="nvcr.io/nvidia/tritonserver:24.10-py3", device="cuda:1",
                          client=client)
    server._launch()
    kw = client.containers.kwargs
    before, args = _tritonserver(kw["command"])
    flags = _flags(args)
    assert flags["allow-sagemaker"] == "true"
    assert flags["model-control-mode"] == "explicit"                # the MME protocol loads and unloads
    published = {int(k.split("/")[0]): v for k, v in kw["ports"].items()}
    for inside, host in ((flags["sagemaker-port"], PORTS.sagemaker), (flags["http-port"], PORTS.http),
                         (flags["metrics-port"], PORTS.metrics)):
        assert published[int(inside)] == ("127.0.0.1", host)
    assert f":{PORTS.sagemaker}" in server.sagemaker_url and f":{PORTS.http}" in server.http_url
    (bind,) = [v["bind"] for v in kw["volumes"].values()]
    # the repository tritonserver is given exists before it starts; the backends are the image's own
    assert flags["model-repository"] in before[before.index("mkdir"):] and "backend-directory" not in flags
    assert server.model_url(tmp_path / "models" / "m-v0").startswith(bind + "/")
    assert kw["environment"]["SAGEMAKER_MULTI_MODEL"] == "true"
    (request,) = kw["device_requests"]
    assert request["DeviceIDs"] == ["1"] and ["gpu"] in request["Capabilities"]
    # published on the host's loopback only; inside the container Triton must listen everywhere
    assert flags["http-address"] == "0.0.0.0" and flags["metrics-address"] == "0.0.0.0"
    assert kw["detach"] is True


def test_all_gpus_and_cpu(tmp_path):
    client = FakeClient()
    DockerTriton(tmp_path, ports=PORTS, device="cuda", client=client)._launch()
    assert client.containers.kwargs["device_requests"][0]["Count"] == -1
    client = FakeClient()
    DockerTriton(tmp_path, ports=PORTS, device="cpu", client=client)._launch()
    assert client.containers.kwargs["device_requests"] == []


def test_model_url_is_the_container_path(tmp_path):
    server = DockerTriton(tmp_path, ports=PORTS, client=FakeClient())
    assert server.model_url(tmp_path / "models" / "resnet50-v0") == f"{CONTAINER_MODELS}/models/resnet50-v0"
    with pytest.raises(MissingPiece, match="outside the folder mounted"):
        server.model_url("/elsewhere/model")


def test_free_ports_are_chosen_when_none_given(tmp_path):
    client = FakeClient()
    server = DockerTriton(tmp_path, client=client)
    server._launch()
    published = set(client.containers.kwargs["ports"].values())
    assert len(published) == 3 and all(host == "127.0.0.1" and p > 0 for host, p in published)


def test_stop_is_graceful_then_removes(tmp_path):
    container = FakeContainer()
    server = DockerTriton(tmp_path, ports=PORTS, client=FakeClient(container), stop_timeout_s=7)
    server._launch()
    server.stop()
    assert "stop(7)" in container.calls and "remove" in container.calls and "kill" not in container.calls
    assert server.container is None


def test_container_that_exits_shows_its_log(tmp_path):
    container = FakeContainer(status="exited", logs=b"E model_repository_manager: no backend 'pytorch'\n")
    server = DockerTriton(tmp_path, ports=Ports(sagemaker=0, http=0, metrics=0), client=FakeClient(container))
    with pytest.raises(ServerError, match="(?s)exited during start-up.*no backend 'pytorch'"):
        server.start()
    assert "remove" in container.calls


def test_unreachable_engine_is_a_missing_piece(monkeypatch):
    def refuse():
        raise docker.errors.DockerException("Error while fetching server API version: connection refused")
    monkeypatch.setattr(docker, "from_env", refuse)
    with pytest.raises(MissingPiece, match="no Docker engine reachable.*start a Docker engine"):
        docker_client()
