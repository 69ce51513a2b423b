"""Deadlock (child): it locks a pthread mutex that a native thread of its parent held at fork.

lab.native starts a pthread (created in C, unknown to ``threading``) that locks a mutex,
writes a byte to our pipe and blocks in read(2). Once the byte arrives the main thread forks.
The child calls ``lab_lock_mutex()`` with the GIL released (ctypes.CDLL) and its only thread
sleeps in futex(FUTEX_WAIT_PRIVATE, timeout NULL) forever: the verdict for the child must be
``deadlock``. The parent waits for the child and exits with its status (128 + N for signal N).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from lab import native  # noqa: E402


def main():
    lib = native.load()
    ready_r, ready_w = os.pipe()
    error = lib.lab_hold_mutex_in_native_thread(ready_w)
    if error:
        sys.exit(f"native_mutex_held: cannot start the native thread: {os.strerror(error)}")
    os.read(ready_r, 1)  # the native thread now holds the mutex
    pid = os.fork()
    if pid == 0:
        lib.lab_lock_mutex()  # blocks forever: the owner thread does not exist in the child
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
