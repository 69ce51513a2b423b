"""prctl(2) calls the lab needs: become a child subreaper."""

from __future__ import annotations

import ctypes
import ctypes.util

PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process, so the lab can reap them.

    Returns False when the kernel refuses (it never should on Linux >= 3.4).
    """
    return _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
