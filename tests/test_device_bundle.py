"""calibration/device_bundle.sh and its run.sh: what a lent GPU host with no internet gets, built
here and run as there, in a Python that has only torch, numpy and torch's own dependencies (a
venv whose site-packages links just those from this one): the wheels cover what the check imports
(nothing is resolved there), and the trimmed tritonserver serves a Python-backend copy whose stub
finds that Python's torch. A quick script stands in for the 8-minute check (tests/test_gpu_check.py
runs that one)."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.triton
ROOT = Path(__file__).parent.parent

# one copy of tiny-bert (transformers, as the zoo builds the reference's models) served by the
# bundled server through the MME protocol, one request, and what it answered
SMOKE = """
import json, sys
from pathlib import Path
import tritonclient.http  # noqa: F401  (the check's HTTP client, with its gevent stack)
import mmesim.calibrate.gpu_check  # noqa: F401  (everything the check itself imports)
from mmesim.calibrate.maxmodels import mme_copy_loader
from mmesim.triton.client import MMEClient
from mmesim.triton.local import LocalTriton, find_tritonserver
from mmesim.triton.packaging import package
work = Path(sys.argv[1])
packaged = package("tiny-bert", "python", work / "artifact", cpu_threads=1)
with LocalTriton(workdir=work / "server") as server:
    client = MMEClient(server.sagemaker_url)
    mme_copy_loader(client, packaged, server, work / "copies", "tiny-bert")(0)
    answer = client.invoke("tiny-bert-v0", packaged.spec.request_body())
    client.unload("tiny-bert-v0")
    client.close()
print(json.dumps({"binary": str(find_tritonserver().binary), "status": answer.status,
                  "body": json.loads(answer.body)}))
"""


def _with_requirements(names: list[str]) -> list[md.Distribution]:
    """These distributions and, transitively, what they require (extras left out)."""
    seen, todo = {}, list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            seen[name] = dist = md.distribution(name)
        except md.PackageNotFoundError:        # not installed here: nothing to link
            continue
        required = [Requirement(r) for r in dist.requires or []]
        todo += [r.name for r in required if r.marker is None or r.marker.evaluate({"extra": ""})]
    return list(seen.values())


def _bare_python(into: Path) -> Path:
    """A venv that sees torch, numpy and torch's requirements only (linked from this one)."""
    subprocess.run([sys.executable, "-m", "venv", str(into)], check=True)
    site = Path(subprocess.run([str(into / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = Path(sysconfig.get_path("purelib"))
    for dist in _with_requirements(["torch", "numpy"]):
        for top in {f.parts[0] for f in dist.files or [] if not f.parts[0].startswith("..")}:
            if (ours / top).exists() and not (site / top).exists():
                (site / top).symlink_to(ours / top)
    return into / "bin" / "python"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "gpu-bundle"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    env = {**os.environ, "PY": sys.executable, "XZ_LEVEL": "-1", "LIMIT_MIB": "200"}   # fast, not small
    done = subprocess.run([str(ROOT / "calibration" / "device_bundle.sh"), version, str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out, done.stdout


def test_the_bundle_holds_wheels_for_this_python_the_server_and_its_runner(bundle):
    out, printed = bundle
    wheels = sorted(p.name for p in (out / "wheels").glob("*.whl"))
    assert any(w.startswith("mmesim-") for w in wheels) and any(w.startswith("transformers-") for w in wheels)
    assert not any(w.startswith(("torch-", "numpy-", "matplotlib-")) for w in wheels)   # the host's, or not needed
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert all(tag in w or "abi3" in w or "-none-" in w for w in wheels)
    assert (out / "tritonserver.tar.xz").stat().st_size > 10 * 2**20 and (out / "run.sh").is_file()
    assert "in all" in printed and "MiB" in printed


def test_run_sh_serves_a_copy_with_the_hosts_own_torch_and_nothing_else(bundle, tmp_path):
    out, _ = bundle
    python = _bare_python(tmp_path / "host")
    bare = subprocess.run([str(python), "-c", "import torch, numpy\ntry:\n import pydantic\nexcept ImportError: print('bare')"],
                          capture_output=True, text=True)
    assert bare.stdout.strip() == "bare", bare.stderr          # the host has torch and numpy, not mmesim's packages
    smoke = tmp_path / "smoke.py"
    smoke.write_text(SMOKE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMESIM_TRITONSERVER", "VIRTUAL_ENV")}
    env.update(PYTHON=str(python), WORK=str(tmp_path / "work"), RUN=f"{smoke} {tmp_path / 'smoke'}")
    done = subprocess.run(["bash", str(out / "run.sh"), str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[1].startswith("torch ") and "| mmesim 0.1.0" in lines[1]
    answer = json.loads(lines[-1])
    assert answer["binary"].startswith(str(tmp_path / "work" / "server"))       # the bundle's server, not ours
    assert answer["status"] == 200 and answer["body"]["outputs"][0]["shape"] == [1, 2]
    assert (tmp_path / "out" / "run.log").read_text().startswith("host: ")


def test_a_python_the_server_has_no_stub_for_is_named_before_anything_is_downloaded(tmp_path):
    done = subprocess.run([str(ROOT / "calibration" / "device_bundle.sh"), "3.99", str(tmp_path / "b")], cwd=ROOT,
                          env={**os.environ, "PY": sys.executable}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no stub for Python 3.99" in done.stderr and "3.12" in done.stderr
    assert not list((tmp_path / "b" / "wheels").glob("*.whl"))
