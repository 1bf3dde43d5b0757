"""The wheel and the sdist build, and the wheel alone runs the README: its library example and
`mmesim simulate` with a shipped measured profile named, not a repository path."""

import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("build")


def _library_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Library"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # the sdist first, then the wheel built from the unpacked sdist: what a user's pip does
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], check=True,
                   capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    """A fresh venv with the wheel (and only the wheel) providing mmesim; its dependencies are
    reached through a path to this interpreter's site-packages (no download, no editable hook)."""
    env_dir = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # a plain path line: .pth files there (the editable install's finder) are not run
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(dist.glob("mmesim-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return env_dir


def test_the_sdist_and_the_wheel_carry_the_licence_and_the_measured_profiles(dist):
    names = zipfile.ZipFile(next(dist.glob("mmesim-*.whl"))).namelist()
    measured = {Path(n).name for n in names if n.startswith("mmesim/profiles/measured/")}
    shipped = {p.name for p in (ROOT / "calibration" / "profiles").glob("*.json")
               if not p.name.endswith(".calibration.json")}
    assert measured == shipped and shipped
    assert any(n.endswith("licenses/LICENSE") for n in names)
    sdist = {Path(n).name for n in tarfile.open(next(dist.glob("mmesim-*.tar.gz"))).getnames()}
    assert shipped <= sdist and "LICENSE" in sdist


def test_the_wheel_runs_the_readme_library_example(venv, tmp_path):
    code = _library_example() + "\nimport mmesim; print('FROM', mmesim.__file__)\n"
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr
    assert f"FROM {venv}" in r.stdout                        # the wheel's copy, not the source tree
    assert float(r.stdout.split()[0]) > 0                    # the throughput it printed
    assert json.loads((tmp_path / "out" / "lib" / "summary.json").read_text())["requests"] > 0


def test_the_wheel_s_cli_simulates_a_measured_profile_by_name(venv, tmp_path):
    r = subprocess.run([str(venv / "bin" / "mmesim"), "simulate", "--profile", "tiny-bert-python-cpu",
                        "--instance", "local", "--memory-budget", "2GiB", "--copies", "2", "--json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["instance_type"] == "local" and s["requests"] > 0 and s["failures"] == 0
    listed = subprocess.run([str(venv / "bin" / "mmesim"), "profiles", "--json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    names = {p["name"] for p in json.loads(listed.stdout)}
    assert {"tiny-bert-python-cpu", "resnet50-pytorch-t4"} <= names
