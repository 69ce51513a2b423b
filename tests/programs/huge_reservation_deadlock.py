"""Deadlock (child) in a process that reserved 1 TiB of address space, as some Rust allocators do.

The parent maps 1 TiB PROT_NONE with MAP_NORESERVE (no memory used, 1 TiB of virtual size),
then does what lock_held_at_fork.py does: the child inherits the reservation and deadlocks on
a lock a vanished thread held. A core of it would be a terabyte: the lab must refuse to write it.
"""

import ctypes
import mmap
import os
import sys
import threading

RESERVE = 1 << 40
MAP_NORESERVE = 0x4000  # <sys/mman.h> on Linux
PROT_NONE = 0

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
address = libc.mmap(None, RESERVE, PROT_NONE,
                    mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
if address in (None, ctypes.c_void_p(-1).value):
    sys.exit(f"mmap of 1 TiB failed: errno {ctypes.get_errno()}")

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
    lock.acquire()  # blocks forever
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(1)
