"""Child processes that never outlive mmesim (Triton, Locust workers): the one place that
knows how to tie a child's life to ours, and what a process tree has cost."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
from pathlib import Path


def die_with_parent() -> None:
    """Runs in the child before exec: its own process group (so it can be stopped as one), and
    SIGTERM if we die (Linux's PR_SET_PDEATHSIG; elsewhere the process group is all we get)."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def remove_leftovers(folder, prefix: str) -> list[Path]:
    """Remove the entries of ``folder`` named ``<prefix><pid>[-_]...`` whose pid is no longer
    alive and that belong to this user (what a crashed mmesim process left); the removed."""
    found = []
    pattern = re.compile(re.escape(prefix) + r"(\d+)[-_]")
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return found
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or int(m[1]) == os.getpid() or _alive(int(m[1])):
            continue
        try:
            if entry.lstat().st_uid != os.getuid():
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            found.append(entry)
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of process ``pid`` and its descendants (Triton and its Python-backend
    stubs), those still running and those it has reaped; None if ``pid`` is gone. A child
    that exits before its parent reaps it drops out, so readings can go back a little."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def machine_busy_s() -> float:
    """CPU seconds this machine's cores have been busy since boot, summed over cores (user,
    system, nice and interrupts: /proc/stat); differences over an interval give cores busy."""
    import psutil
    t = psutil.cpu_times()
    return t.user + t.system + t.nice + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _schedstats(pid: int):
    """(thread id, nanoseconds run, nanoseconds runnable but waiting) of each thread of process
    ``pid`` that can be read (/proc/PID/task/TID/schedstat); none if ``pid`` is gone."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            yield tid, int(fields[0]), int(fields[1])
        except (OSError, IndexError, ValueError):
            continue


def thread_times(pid: int) -> tuple[float, float]:
    """(seconds run, seconds runnable but waiting for a core) of all threads of process
    ``pid``, from the kernel's nanosecond scheduler counters (0 for what cannot be read)."""
    ran = waited = 0
    for _, r, w in _schedstats(pid):
        ran, waited = ran + r, waited + w
    return ran / 1e9, waited / 1e9


def started_s(pid: int, tid: int | str | None = None) -> float | None:
    """When process ``pid`` (or its thread ``tid``) started, in seconds since boot (the
    kernel's clock ticks, 10 ms here; /proc/.../stat field 22); None if it cannot be read."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()     # the name may hold spaces and parentheses
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def thread_cpu_split_s(pid: int, since_s: float | None) -> tuple[float, float]:
    """(CPU seconds run by the threads of ``pid`` that started before ``since_s``, by those
    started at or after it; seconds since boot, as ``started_s``): a server's own threads
    apart from those it made later, e.g. when it loaded a model. ``since_s`` None: all before."""
    before = later = 0
    for tid, ran, _ in _schedstats(pid):
        start = started_s(pid, tid) if since_s is not None else None
        if start is not None and start >= since_s:
            later += ran
        else:
            before += ran
    return before / 1e9, later / 1e9


def tree_run_delay_s(pid: int) -> float | None:
    """Seconds the threads of process ``pid`` and its descendants (those still running) have
    spent runnable but waiting for a core; None if ``pid`` is gone. Where a request's threads
    wait for cores, which processor sharing spreads evenly instead."""
    import psutil
    try:
        root = psutil.Process(pid)
        pids = [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return None
    return sum(thread_times(p)[1] for p in pids)
