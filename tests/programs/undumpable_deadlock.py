"""Deadlock (child) in a process that made itself non-dumpable: ptrace needs CAP_SYS_PTRACE.

As lock_held_at_fork.py, but the child calls prctl(PR_SET_DUMPABLE, 0) before it blocks, as
setuid programs and some hardened services are. Without CAP_SYS_PTRACE nothing may attach
to it, nor read its /proc/PID/syscall: the lab must say so, with the remedy.
"""

import ctypes
import os
import sys
import threading

PR_SET_DUMPABLE = 4  # <linux/prctl.h>

lock = threading.Lock()
held = threading.Event()
never = threading.Event()


def hold():
    with lock:
        held.set()
        never.wait()


threading.Thread(target=hold, name="holder", daemon=True).start()
held.wait()
pid = os.fork()
if pid == 0:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        os._exit(3)
    lock.acquire()  # blocks forever
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(1)
