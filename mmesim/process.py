"""Child processes that never outlive mmesim (Triton, Locust workers): the one place that
knows how to tie a child's life to ours, and what a process tree has cost."""

from __future__ import annotations

import ctypes
import os
import signal


def die_with_parent() -> None:
    """Runs in the child before exec: its own process group (so it can be stopped as one), and
    SIGTERM if we die (Linux's PR_SET_PDEATHSIG; elsewhere the process group is all we get)."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


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
