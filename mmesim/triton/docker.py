"""Triton in a container through the Docker SDK: NVIDIA's Triton image, SageMaker's Triton
image or the calibration image of containers/, with GPUs, in SageMaker MME mode.

The working folder (artifacts, extracted models) is mounted at /opt/ml/models, where
SageMaker puts MME models; Triton's ports are published on free host ports.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from mmesim.errors import MissingPiece
from mmesim.triton.args import Ports, ServerOptions, server_args, server_env
from mmesim.triton.server import TritonServer, free_ports

NVIDIA_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"          # Triton 2.54, all backends
SAGEMAKER_IMAGE = "785573368785.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3"
CALIBRATION_IMAGE = "mmesim-triton:latest"                         # containers/Dockerfile
CONTAINER_MODELS = "/opt/ml/models"
CONTAINER_PORTS = Ports(sagemaker=8080, http=8000, metrics=8002)

HOW_TO_GET_DOCKER = ("start a Docker engine (and the NVIDIA Container Toolkit for GPUs: "
                     "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/), check `docker info` "
                     "works for this user, or use --runner local")


def docker_client(client: Any = None) -> Any:
    """The given client, or one from the environment; MissingPiece when no engine answers."""
    if client is not None:
        return client
    try:
        import docker
    except ImportError:
        raise MissingPiece("the 'docker' Python package is missing: pip install 'mmesim[triton]'") from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        raise MissingPiece(f"no Docker engine reachable ({type(exc).__name__}: {exc}); {HOW_TO_GET_DOCKER}") from None
    return client


def gpu_request(device: str) -> list:
    """Device requests for ``cuda`` (all GPUs), ``cuda:N`` (one) or ``cpu`` (none)."""
    if device == "cpu":
        return []
    from docker.types import DeviceRequest
    if device in ("cuda", "gpu", "all"):
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    index = device.split(":", 1)[1]
    return [DeviceRequest(device_ids=[index], capabilities=[["gpu"]])]


class DockerTriton(TritonServer):
    """tritonserver in a detached container; stop is ``docker stop`` then removal."""

    def __init__(self, workdir: str | Path, options: ServerOptions | None = None, ports: Ports | None = None, *,
                 image: str = CALIBRATION_IMAGE, device: str = "cuda", client: Any = None,
                 shm_size: str = "2g", pull: bool = False, **kwargs):
        options = options or ServerOptions()
        super().__init__(options, ports, **kwargs)
        self.workdir = Path(workdir).resolve()
        self.image, self.device, self.shm_size, self.pull = image, device, shm_size, pull
        self.client = docker_client(client)
        self.container = None

    def model_url(self, path: str | Path) -> str:
        path = Path(path).resolve()
        try:
            rel = path.relative_to(self.workdir)
        except ValueError:
            raise MissingPiece(f"{path} is outside the folder mounted into the container ({self.workdir})") from None
        return f"{CONTAINER_MODELS}/{rel}" if str(rel) != "." else CONTAINER_MODELS

    def run_kwargs(self) -> dict[str, Any]:
        """What is passed to ``containers.run``: image, command, env, devices, mounts, ports."""
        # inside the container Triton listens everywhere (so Docker can forward to it); the host
        # side is published on the address asked for, loopback by default
        options = replace(self.options, model_repository="/tmp/sagemaker", backend_directory=None,
                          bind_address="0.0.0.0", shm_region_prefix=None)
        host = self.options.bind_address
        command = ["bash", "-c", "mkdir -p /tmp/sagemaker && exec tritonserver " +
                   " ".join(server_args(options, CONTAINER_PORTS))]
        return dict(
            image=self.image,
            command=command,
            environment=server_env(options),
            device_requests=gpu_request(self.device),
            volumes={str(self.workdir): {"bind": CONTAINER_MODELS, "mode": "rw"}},
            ports={f"{CONTAINER_PORTS.sagemaker}/tcp": (host, self.ports.sagemaker),
                   f"{CONTAINER_PORTS.http}/tcp": (host, self.ports.http),
                   f"{CONTAINER_PORTS.metrics}/tcp": (host, self.ports.metrics)},
            shm_size=self.shm_size,
            detach=True,
            labels={"mmesim": "calibrate"},
        )

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.ports is None:
            self.ports = free_ports()
        if self.pull:
            self.client.images.pull(self.image)
        try:
            self.container = self.client.containers.run(**self.run_kwargs())
        except Exception as exc:
            name = type(exc).__name__
            if name == "ImageNotFound":
                raise MissingPiece(f"image {self.image} not found: build it (containers/README.md) or pull it") from None
            if "could not select device driver" in str(exc) or "nvidia" in str(exc).lower():
                raise MissingPiece(f"Docker cannot give the container a GPU ({exc}); install the NVIDIA "
                                   "Container Toolkit, or use --device cpu") from None
            raise

    def _alive(self) -> bool:
        if self.container is None:
            return False
        try:
            self.container.reload()
        except Exception:
            return False
        return self.container.status in ("created", "running")

    def _terminate(self) -> None:
        try:
            self.container.stop(timeout=int(self.stop_timeout_s))
        except Exception:
            pass

    def _wait_exit(self, timeout_s: float) -> bool:
        if self.container is None:
            return True
        try:
            self.container.wait(timeout=timeout_s)
        except Exception:
            if self._alive():
                return False
        try:
            self.container.remove(force=True)
        except Exception:
            pass
        self.container = None
        return True

    def _kill(self) -> None:
        try:
            self.container.kill()
        except Exception:
            pass

    def log_tail(self, lines: int = 40) -> str:
        if self.container is None:
            return ""
        try:
            return self.container.logs(tail=lines).decode(errors="replace")
        except Exception:
            return ""

    def memory_bytes(self) -> int:
        """The container's resident memory (cgroup usage), the CPU analogue of the process tree."""
        stats = self.container.stats(stream=False)
        mem = stats.get("memory_stats", {})
        return int(mem.get("usage", 0) - mem.get("stats", {}).get("inactive_file", 0))
