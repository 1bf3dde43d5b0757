"""The instance type ``local``: this host as the simulator sees it (cores, RAM, a memory
budget shared with `mmesim calibrate --device cpu`, no price)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmesim.calibrate.memory import HostMemory
from mmesim.catalog import load_catalog, local_instance
from mmesim.cli import main
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.profile import load_profile
from mmesim.sim import max_models_loaded

GiB = 2**30
PROFILES = Path(__file__).parent.parent / "calibration" / "profiles"


def _meminfo_total() -> int:
    """MemTotal from /proc/meminfo: a source the code does not read (it asks sysconf)."""
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal:"))
    return int(line.split()[1]) * 1024


def test_local_describes_this_host():
    it = load_catalog().instance("local")
    assert it.name == "local" and it.gpu == "cpu" and it.price_usd_per_hour == 0
    # the cores this process may run on, as coreutils' nproc counts them (the affinity mask)
    assert it.vcpus == int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    assert it.host_memory_bytes == pytest.approx(_meminfo_total(), rel=0.01)
    device = load_catalog().gpu_of(it)
    assert device.key == "cpu" and device.nvml_total_bytes == it.memory_budget_bytes


def test_budget_default_is_a_quarter_of_ram_for_calibrate_and_simulate_alike():
    quarter = _meminfo_total() / 4
    assert HostMemory(os.getpid()).total == pytest.approx(quarter, rel=0.01)            # calibrate's "total"
    assert local_instance().memory_budget_bytes == pytest.approx(quarter, rel=0.01)    # the simulator's
    assert load_catalog().gpu_of(local_instance(4 * GiB)).nvml_total_bytes == 4 * GiB
    ep = EndpointConfig(instance_type="local", memory_budget_bytes=3 * GiB)
    assert load_catalog().gpu_of(ep.instance()).nvml_total_bytes == 3 * GiB


def test_local_has_no_sagemaker_front_end_unless_told():
    assert EndpointConfig(instance_type="local").overhead_s == 0
    assert EndpointConfig(instance_type="local", overhead_s=0.01).overhead_s == 0.01
    assert EndpointConfig(instance_type="ml.g4dn.xlarge").overhead_s == 0.030


def test_max_models_follows_the_budget():
    p = load_profile(PROFILES / "tiny-bert-python-cpu.json")
    small = sum(max_models_loaded([p], EndpointConfig(instance_type="local", memory_budget_bytes=2 * GiB))[0])
    large = sum(max_models_loaded([p], EndpointConfig(instance_type="local", memory_budget_bytes=4 * GiB))[0])
    # (baseline + n x per-copy) (n + 1) / n >= 0.9 x budget: doubling the budget doubles n, give or take the baseline
    assert small >= 3 and 1.8 * small <= large <= 2.6 * small


def test_wrong_combinations_are_clear():
    with pytest.raises(ConfigError, match="memory_budget_bytes applies to instance type local"):
        from mmesim.serde import validate
        validate(EndpointConfig, {"instance_type": "ml.g4dn.xlarge", "memory_budget_bytes": GiB}, source="ep.yaml")
    proc = subprocess.run([sys.executable, "-m", "mmesim.cli", "simulate", "--profile", "resnet50-pytorch-t4",
                           "--instance", "local"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "resnet50-pytorch-t4" in proc.stderr and "--device cpu" in proc.stderr


def test_cli_lists_and_simulates_local(tmp_path, capsys):
    assert main(["instances", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["instances"]
    assert listed["local"]["gpu"] == "cpu" and "ml.g4dn.xlarge" in listed
    wl = tmp_path / "light.yaml"
    wl.write_text("kind: poisson\nrates: [{end_s: 20, rate: 2}]\n")
    assert main(["simulate", "--profile", str(PROFILES / "tiny-mlp-python-cpu.json"), "--instance", "local",
                 "--memory-budget", "1GiB", "--workload", str(wl), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["instance_type"] == "local" and s["requests"] >= 20 and s["failures"] == 0
    assert s["cost_per_hour_usd"] == 0
