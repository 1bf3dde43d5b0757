"""calibrate/working.py: the model's own unload time read from Triton's log, the peak
counter of a process tree, and how cycles become a leak per cycle and a working-memory curve."""

import os
import subprocess
import sys

import pytest

from mmesim.calibrate.memory import HostMemory, MemorySample, settle_unload
from mmesim.calibrate.working import (Cycles, TreePeak, WorkingPoint, largest, left_behind, measure_working,
                                     unload_seconds)
from mmesim.units import MiB

# the lines Triton 2.x writes at --log-verbose=1 for one SageMaker unload (as in a calibration's log)
LOG = """\
I1204 15:01:31.880278 10720 sagemaker_server.cc:257] "SageMaker request: UNLOAD MODEL"
I1204 15:01:31.880281 10720 sagemaker_server.cc:708] "Unloading SageMaker TargetModel: m0\\n"
I1204 15:01:31.880423 10720 sagemaker_server.cc:745] "In the loop to wait for model to be unavailable"
I1204 15:01:32.380654 10720 sagemaker_server.cc:745] "In the loop to wait for model to be unavailable"
I1204 15:01:33.466263 10720 model_lifecycle.cc:624] "successfully unloaded 'm0' version 1"
I1204 15:01:33.882416 10720 sagemaker_server.cc:673] "Discovered model: m0, version: 1 in state: UNAVAILABLE"
I1204 15:01:34.382697 10720 sagemaker_server.cc:763] "UNLOAD for model m0 completed in 2 seconds."
I1204 23:59:59.900000 10720 sagemaker_server.cc:708] "Unloading SageMaker TargetModel: m10\\n"
I1205 00:00:00.150000 10720 model_lifecycle.cc:624] "successfully unloaded 'm10' version 1"
"""


def test_unload_is_the_models_own_not_the_servers_polls():
    assert unload_seconds(LOG, "m0", 2026) == pytest.approx(1.585982)
    assert unload_seconds(LOG, "m10", 2026) == pytest.approx(0.25)      # across midnight, m10 is not m0
    assert unload_seconds(LOG, "m1", 2026) is None                       # never unloaded
    assert unload_seconds(LOG.replace("Unloading SageMaker", "x"), "m0", 2026) is None   # log level 0


def test_leak_is_the_growth_after_the_first_cycle():
    assert Cycles([100, 130, 160, 190], [1.0] * 4, [2.5] * 4, "").leak_per_cycle == 30
    assert Cycles([100, 90, 95], [1.0] * 3, [2.5] * 3, "").leak_per_cycle == 0     # memory fell: no leak
    assert Cycles([100], [1.0], [2.5], "").leak_per_cycle == 0


def test_what_a_cycle_leaves_behind_is_private_memory_on_a_host():
    """On a host, the tree's private memory written, which other processes mapping the same
    libraries do not move; a device probe's used memory as it reads it."""
    import os
    probe = HostMemory(os.getpid())
    private = left_behind(probe)
    sample = probe.sample()
    assert abs(private - sum(sample.processes.values())) < 16 * MiB       # two readings of a live process
    assert 0 < private <= sample.used + 16 * MiB                         # private <= PSS, give or take the readings

    class Device:
        def sample(self):
            return MemorySample(used=3 * MiB, total=16 * MiB, processes={1: 1 * MiB})
    assert left_behind(Device()) == 3 * MiB


def test_working_curve_takes_the_largest_cycle_and_never_falls():
    runs = [[WorkingPoint(1, 10, 0, 10), WorkingPoint(8, 8, 0, 8), WorkingPoint(32, 50, 0, 50)],
            [WorkingPoint(1, 12, 0, 12), WorkingPoint(8, 9, 0, 9), WorkingPoint(32, 40, 0, 40)]]
    assert [(p.batch, p.bytes) for p in largest(runs)] == [(1, 12), (8, 12), (32, 50)]


def test_tree_peak_sees_memory_a_child_touched_and_freed():
    """A real process: it allocates and frees 64 MiB per request; the kernel's
    peak counter, reset first, shows it although the memory is gone when read."""
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys\n"
        "for line in sys.stdin:\n"
        "    n = int(line)\n"
        "    b = bytearray(n * 1024 * 1024)\n"
        "    b[::4096] = b'x' * len(b[::4096])\n"
        "    del b\n"
        "    print('ok', flush=True)\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        def invoke(mib):
            child.stdin.write(f"{mib}\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ok"

        points = measure_working(TreePeak(child.pid), invoke, [16, 64], repeats=2)
        assert 12 * MiB < points[0].bytes < 40 * MiB
        assert 60 * MiB < points[1].bytes < 100 * MiB
        assert points[1].peak_bytes > points[1].before_bytes
    finally:
        child.stdin.close()
        child.kill()
        child.wait()


def test_sampled_peak_catches_device_memory_that_rises_and_falls_during_an_execution():
    """On a GPU the peak comes from NVML sampled every millisecond (NVML is the boundary here:
    a device whose used memory rises by 300 MiB for 20 ms while an execution runs)."""
    import time
    from types import SimpleNamespace

    from mmesim.calibrate.working import SampledPeak

    class Device:                       # stands in for NvmlMemory: sample().used in bytes
        used = 1000 * MiB

        def sample(self):
            return SimpleNamespace(used=self.used)

    device = Device()

    def invoke(batch):
        device.used += batch * 100 * MiB
        time.sleep(0.02)
        device.used -= batch * 100 * MiB

    reader = SampledPeak(device)
    try:
        points = measure_working(reader, invoke, [1, 3], repeats=1)
    finally:
        reader.stop()
    assert [p.bytes for p in points] == [100 * MiB, 300 * MiB]
    assert points[0].before_bytes == 1000 * MiB


def test_a_processes_own_memory_does_not_move_with_its_neighbours(tmp_path):
    """What a process wrote is its own whatever else runs; its unique pages (USS) are not: a
    file it alone maps counts there until another process maps it too (a stub's torch
    libraries, when the machine has no other torch process)."""
    mounts = [line.split() for line in open("/proc/mounts")]
    fs = max((m for m in mounts if str(tmp_path).startswith(m[1])), key=lambda m: len(m[1]))[2]
    if fs == "tmpfs":
        pytest.skip("a tmpfs file's pages are never clean, unlike a library's on disk")
    data = tmp_path / "library.bin"
    with open(data, "wb") as fh:        # written back, so its pages are clean, as a library's are
        fh.write(os.urandom(32 * MiB))
        fh.flush()
        os.fsync(fh.fileno())
    code = ("import mmap, sys\n"
            "f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n"
            "touched = sum(m[i] for i in range(0, len(m), 4096))\n"
            "b = bytearray(16 * 2**20); b[::4096] = b'x' * (len(b) // 4096)\n"
            "print('ready', flush=True); sys.stdin.read()\n")
    procs = []
    try:
        def start():
            p = subprocess.Popen([sys.executable, "-c", code, str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "ready"
            return p
        first = start()
        probe = HostMemory(first.pid)
        psutil = pytest.importorskip("psutil")
        alone, uss_alone = probe.sample().processes[first.pid], psutil.Process(first.pid).memory_full_info().uss
        start()
        beside, uss_beside = probe.sample().processes[first.pid], psutil.Process(first.pid).memory_full_info().uss
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert uss_alone - uss_beside > 24 * MiB          # the file's pages left its USS once another mapped them
    assert alone > 16 * MiB and abs(alone - beside) < 2 * MiB


def test_an_unload_settles_a_device_once_its_memory_stops_falling():
    """A device's memory comes back after the stub's exit: read until two readings agree."""
    class Device:
        def __init__(self, readings):
            self.readings = list(readings)
            self.read = 0

        def sample(self):
            self.read += 1
            return MemorySample(used=self.readings.pop(0) if len(self.readings) > 1 else self.readings[0],
                                total=16 * 1024 * MiB)
    device = Device([900 * MiB, 600 * MiB, 300 * MiB, 300 * MiB, 100 * MiB])
    settle_unload([], device, interval_s=0.001)
    assert device.read == 4 and device.readings == [100 * MiB]       # stopped at the first still pair
    settle_unload([], HostMemory(os.getpid()))                         # a host's stubs were waited for: no readings
