"""Child processes that never outlive mmesim (Triton, Locust workers): the one place that
knows how to tie a child's life to ours."""

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
