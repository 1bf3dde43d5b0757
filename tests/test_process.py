"""What a process's threads cost, told apart by when they started (mmesim.process)."""

import os
import threading
import time

from mmesim.process import started_s, thread_cpu_split_s


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def test_threads_started_later_are_counted_apart():
    """A thread started after the mark burns 0.3 s of CPU: all of it on the later side; this
    process's older threads keep theirs on the other."""
    pid = os.getpid()
    assert started_s(pid) <= _uptime() and started_s(pid, "no-such-thread") is None
    time.sleep(0.05)
    mark = _uptime() - 0.005           # the kernel counts starts in 10 ms ticks
    before = thread_cpu_split_s(pid, mark)
    done, burned = threading.Event(), threading.Event()

    def burn():
        t = time.thread_time()
        while time.thread_time() - t < 0.3:
            pass
        burned.set()
        done.wait(60)

    worker = threading.Thread(target=burn)
    worker.start()
    try:
        assert burned.wait(60)             # its 0.3 s of CPU, however long a busy machine takes to give it
        assert started_s(pid, worker.native_id) >= mark
        old, new = thread_cpu_split_s(pid, mark)
        assert new - before[1] >= 0.29 and old - before[0] < 0.2
        assert thread_cpu_split_s(pid, None)[1] == 0.0 < thread_cpu_split_s(pid, None)[0]   # no mark: all before
    finally:
        done.set()
        worker.join()
    assert thread_cpu_split_s(-1, mark) == (0.0, 0.0)
