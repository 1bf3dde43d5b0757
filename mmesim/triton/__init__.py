"""Real Triton: run a server (local process or container), package models for it, talk to it.

- args: the one builder of tritonserver's arguments and environment
- server: what all runners share (ports, readiness, stop, cleanup)
- local / docker: the two runners
- client: the SageMaker MME protocol and Triton's KServe v2 statistics
- modelspec, zoo, packaging, tensorrt: models and their Triton/MME artifacts
- trace, execlog: inside the server (Triton's per-request trace; the model stubs' log of each execution)
"""

from mmesim.triton.args import Ports, ServerOptions, server_args, server_env
from mmesim.triton.client import MMEClient, MMEError, kserve_client, model_timings
from mmesim.triton.server import ServerError, TritonServer

__all__ = ["Ports", "ServerOptions", "server_args", "server_env", "MMEClient", "MMEError", "kserve_client",
           "model_timings", "ServerError", "TritonServer"]
