"""prctl(2) calls the lab needs: become a child subreaper; make a child die with the lab."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process, so the lab can reap them.

    Returns False when the kernel refuses (it never should on Linux >= 3.4).
    """
    return _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def die_with(parent: int, ignore: tuple[int, ...] = ()):
    """A ``preexec_fn`` for Popen: the child gets SIGKILL when ``parent`` dies (kill -9 of the
    lab included), ends at once if ``parent`` is already gone, and ignores ``ignore``.

    It runs between fork and exec, so it only calls prctl, getppid and signal(2) through libc:
    no import, no lock another thread of the lab could hold. (PR_SET_PDEATHSIG is tied to the
    forking thread: the lab starts its processes from its main thread.)
    """
    prctl, sigkill, getppid, exit_now = _libc.prctl, signal.SIGKILL.value, os.getppid, os._exit
    set_handler, ignored = _libc.signal, ctypes.c_void_p(1)  # SIG_IGN
    numbers = tuple(int(s) for s in ignore)

    def child() -> None:
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        for number in numbers:
            set_handler(number, ignored)
        if getppid() != parent:
            exit_now(1)

    return child
