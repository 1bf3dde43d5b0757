"""What the emulator adds on top of the model server, measured with one load generator.

1. A trivial model (mmesim's null model: identity, Python backend) in a real Triton in
   SageMaker mode. The same closed-loop generator (16 concurrent clients, aiohttp, one
   process) runs alternately against Triton's own ``POST /models/{name}/invoke`` and against
   the emulator's ``InvokeEndpoint`` over that same Triton. Printed: p50/p99 of each, the
   latency the emulator adds (targets: <= 1 ms at p50) and the throughput ratio (>= 0.8).
2. The virtual backend's sustained requests/s (64 clients, a profile of 0.2 ms per batch
   up to 32): target >= 2,000 on a 2-core machine.

    python benchmarks/emulator_overhead.py [--seconds 10] [--rounds 2]

The generator shares the machine's cores with the servers, as a local user's would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"inputs": [{"name": "INPUT__0", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}).encode()


# -- the load generator (runs in its own process) ---------------------------------------------
async def _generate(url: str, headers: dict, clients: int, seconds: float, warmup: float) -> dict:
    import aiohttp
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        measure_from, end = start + warmup, start + warmup + seconds

        async def user():
            nonlocal errors
            while True:
                t = time.perf_counter()
                if t >= end:
                    return
                async with session.post(url, data=BODY, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                done = time.perf_counter()
                if t >= measure_from:
                    if ok:
                        latencies.append(done - t)
                    else:
                        errors += 1

        await asyncio.gather(*(user() for _ in range(clients)))
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "errors": errors, "rps": n / seconds,
            "p50_ms": 1e3 * latencies[n // 2] if n else float("nan"),
            "p99_ms": 1e3 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan")}


def generate(url: str, headers: dict, clients: int, seconds: float, warmup: float = 2.0) -> dict:
    """Run the generator in a fresh process (its CPU is not the server's event loop)."""
    code = ("import asyncio, json, sys; sys.path.insert(0, %r); import uvloop; "
            "from benchmarks.emulator_overhead import _generate; "
            "print(json.dumps(uvloop.run(_generate(%r, %r, %d, %f, %f))))"
            % (str(ROOT), url, headers, clients, seconds, warmup))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the emulator as a process --------------------------------------------------------------
class Emulator:
    def __init__(self, *args: str):
        cmd = [sys.executable, "-m", "mmesim.cli", "emulate", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
        self.url = None
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            m = re.search(r"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=(\S+)", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            self.stop()
            raise RuntimeError("the emulator did not start:\n" + "".join(lines))

    def triton_sagemaker_port(self) -> int:
        import psutil
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            for arg in child.cmdline():
                if arg.startswith("--sagemaker-port="):
                    return int(arg.split("=", 1)[1])
        raise RuntimeError("no tritonserver under the emulator")

    def cpu_s(self) -> float:
        """CPU seconds the emulator's own process (not its Triton) has used."""
        import psutil
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def invoke_once(url: str, target: str) -> None:
    import boto3
    client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    client.invoke_endpoint(EndpointName="mmesim", TargetModel=target, ContentType="application/json", Body=BODY)


def overhead(seconds: float, rounds: int, clients: int = 16) -> dict:
    from mmesim.emulator.platform import container_name
    from mmesim.triton.packaging import package_null
    with tempfile.TemporaryDirectory(prefix="mmesim-bench-") as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        null = package_null(Path(tmp) / "null")
        null.artifact.rename(models / "null-v0.tar.gz")
        emulator = Emulator("--instance", "local", "--memory-budget", "2GiB", "--backend", "triton",
                            "--models", str(models))
        try:
            invoke_once(emulator.url, "null-v0.tar.gz")              # loads it
            direct = f"http://127.0.0.1:{emulator.triton_sagemaker_port()}/models/{container_name('null-v0.tar.gz')}/invoke"
            via = f"{emulator.url}/endpoints/mmesim/invocations"
            results = {"direct": [], "emulator": []}
            for _ in range(rounds):
                results["direct"].append(generate(direct, {"Content-Type": "application/json"}, clients, seconds))
                cpu = emulator.cpu_s()
                r = generate(via, {"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "null-v0.tar.gz"},
                             clients, seconds)
                r["emulator_cpu_us"] = 1e6 * (emulator.cpu_s() - cpu) / max(1, r["requests"] + r["errors"])
                results["emulator"].append(r)
        finally:
            emulator.stop()
    return results


def virtual_rps(seconds: float, clients: int = 64) -> dict:
    from mmesim.profile import ModelProfile
    with tempfile.TemporaryDirectory(prefix="mmesim-bench-") as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        import io
        import tarfile
        with tarfile.open(models / "fast-v0.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo("fast/config.pbtxt")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
        profile = ModelProfile(
            name="fast", model="fast", framework="pytorch", gpu="t4", artifact_bytes=1000, gpu_memory_bytes=2**20,
            baseline_gpu_bytes=0, load_s=0.1, unload_s=0.05,
            service=[{"batch": 1, "seconds": 0.0002}, {"batch": 32, "seconds": 0.0004}], input_bytes=100,
            decode_s_per_byte=0.0, triton={"max_batch_size": 32}, provenance={"method": "hand", "source": "benchmark"})
        path = Path(tmp) / "fast.json"
        profile.save(path)
        emulator = Emulator("--instance", "ml.g4dn.xlarge", "--backend", "virtual", "--profile", str(path),
                            "--models", str(models))
        try:
            invoke_once(emulator.url, "fast-v0.tar.gz")
            cpu = emulator.cpu_s()
            r = generate(f"{emulator.url}/endpoints/mmesim/invocations",
                         {"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "fast-v0.tar.gz"},
                         clients, seconds)
            r["emulator_cpu_us"] = 1e6 * (emulator.cpu_s() - cpu) / max(1, r["requests"] + r["errors"])
            return r
        finally:
            emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-triton", action="store_true")
    args = parser.parse_args()
    if not args.skip_triton:
        r = overhead(args.seconds, args.rounds)
        best = {k: max(v, key=lambda x: x["rps"]) for k, v in r.items()}
        for k, v in r.items():
            for i, x in enumerate(v):
                print(f"  {k:8s} round {i}: {x['rps']:8.0f} req/s  p50 {x['p50_ms']:6.2f} ms  p99 {x['p99_ms']:6.2f} ms"
                      f"  errors {x['errors']}" + (f"  emulator CPU {x['emulator_cpu_us']:.0f} us/request"
                                                   if "emulator_cpu_us" in x else ""))
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "p50_ms", "p99_ms")} for k, v in r.items()}
        d, e = med["direct"], med["emulator"]
        print(f"null model, 16 clients (median of {args.rounds} rounds of {args.seconds:.0f} s):")
        print(f"  Triton direct : {d['rps']:8.0f} req/s  p50 {d['p50_ms']:.2f} ms  p99 {d['p99_ms']:.2f} ms")
        print(f"  via emulator  : {e['rps']:8.0f} req/s  p50 {e['p50_ms']:.2f} ms  p99 {e['p99_ms']:.2f} ms")
        print(f"  added latency : p50 {e['p50_ms'] - d['p50_ms']:+.2f} ms (target <= 1 ms), "
              f"p99 {e['p99_ms'] - d['p99_ms']:+.2f} ms")
        print(f"  throughput ratio: {e['rps'] / d['rps']:.2f} (target >= 0.8); best rounds "
              f"{best['emulator']['rps'] / best['direct']['rps']:.2f}")
    v = virtual_rps(args.seconds)
    print(f"virtual backend, 64 clients, {args.seconds:.0f} s: {v['rps']:.0f} req/s sustained (target >= 2,000), "
          f"p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms, errors {v['errors']}; emulator CPU "
          f"{v['emulator_cpu_us']:.0f} us/request (one core: {1e6 / v['emulator_cpu_us']:.0f} req/s)")


if __name__ == "__main__":
    main()
