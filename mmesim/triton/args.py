"""The one place that decides how tritonserver is started: its command-line arguments and
environment, the same for a local process and for a container.

SageMaker's own image starts Triton in MME mode with ``SAGEMAKER_MULTI_MODEL=true``,
``--allow-sagemaker=true``, ``--model-control-mode=explicit`` and a dummy, empty model
repository (each loaded model URL becomes a repository of its own). We do the same, and keep
Triton's HTTP (KServe v2) and metrics ports open as well, because calibration reads the
statistics API. Every port binds ``bind_address`` (loopback unless the user says otherwise):
Triton 2.51 has no address flag for its SageMaker port, so mmesim.triton.loopback moves that
one onto loopback for a local process, and a container publishes its ports on loopback only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mmesim.units import MiB


@dataclass(frozen=True)
class Ports:
    """Where Triton listens: SageMaker protocol, KServe v2 HTTP, metrics (gRPC stays off)."""

    sagemaker: int = 8080
    http: int = 8000
    metrics: int = 8002


@dataclass(frozen=True)
class ServerOptions:
    """What a calibration run chooses about the server; everything else is fixed below."""

    model_repository: str = "/tmp/sagemaker"        # dummy, empty: MME models register their own
    sagemaker: bool = True
    backend_directory: str | None = None
    exit_timeout_s: int = 5
    log_verbose: int = 0
    python_shm_default_bytes: int = 16 * MiB       # what SageMaker's serve script sets
    python_shm_growth_bytes: int = MiB
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    # where Triton's ports listen: loopback unless the user asks otherwise ($MMESIM_TRITON_ADDRESS)
    bind_address: str = field(default_factory=lambda: os.environ.get("MMESIM_TRITON_ADDRESS", "127.0.0.1"))
    shm_region_prefix: str | None = None            # the Python backend's /dev/shm names (ours to clean)
    exec_log: str | None = None                     # a folder: mmesim's models log each execution (triton.execlog)


def server_args(options: ServerOptions, ports: Ports) -> list[str]:
    """tritonserver's arguments (without the program name)."""
    args = [
        f"--model-repository={options.model_repository}",
        "--model-control-mode=explicit",
        f"--http-address={options.bind_address}",
        f"--http-port={ports.http}",
        "--allow-grpc=false",
        "--allow-metrics=true",
        f"--metrics-address={options.bind_address}",
        f"--metrics-port={ports.metrics}",
        f"--exit-timeout-secs={options.exit_timeout_s}",
        f"--log-verbose={options.log_verbose}",
        f"--backend-config=python,shm-default-byte-size={options.python_shm_default_bytes}",
        f"--backend-config=python,shm-growth-byte-size={options.python_shm_growth_bytes}",
    ]
    if options.shm_region_prefix:
        args.append(f"--backend-config=python,shm-region-prefix-name={options.shm_region_prefix}")
    if options.sagemaker:
        args += ["--allow-sagemaker=true", f"--sagemaker-port={ports.sagemaker}"]
    if options.backend_directory:
        args.append(f"--backend-directory={options.backend_directory}")
    return args + list(options.extra_args)


EXEC_LOG_ENV = "MMESIM_EXEC_LOG"     # read by the models mmesim packages (templates/python_model.py)


def server_env(options: ServerOptions) -> dict[str, str]:
    """Environment variables Triton and its model stubs read: MME mode is switched on here, as
    in SageMaker; ``exec_log`` has mmesim's models log each execution (mmesim.triton.execlog)."""
    env = {"SAGEMAKER_MULTI_MODEL": "true"} if options.sagemaker else {}
    if options.exec_log:
        env[EXEC_LOG_ENV] = options.exec_log
    return env
