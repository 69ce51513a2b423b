"""Deadlock (child): a glibc mutex locked by a *Python* thread, through C, at the fork.

The thread "mutex-holder" calls lab_lock_mutex() (ctypes: a pthread_mutex_lock that returns
holding the mutex) and then waits in os.read at line 26. The child locks the same mutex and
sleeps forever. The lab reads the owner's TID from the child's memory; with the fork hook it
names the thread and shows its Python stack at the fork.
"""

import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from lab import native  # noqa: E402

lib = native.load()
locked = threading.Event()
never_r, never_w = os.pipe()


def hold():
    lib.lab_lock_mutex()
    locked.set()
    os.read(never_r, 1)  # holds the mutex while it waits


def main():
    threading.Thread(target=hold, name="mutex-holder", daemon=True).start()
    locked.wait()
    pid = os.fork()
    if pid == 0:
        lib.lab_lock_mutex()  # the owner thread does not exist in the child
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    sys.exit(0)


if __name__ == "__main__":
    main()
