"""Deadlock (child), whatever its handlers: a glibc mutex orphaned at fork, SIGUSR1/SIGTERM
handled in Python (as a Celery prefork child handles SIGUSR1 for its soft time limit).

No Python handler can end the wait: glibc's lock retries the futex on EINTR.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from lab import native  # noqa: E402


def main():
    lib = native.load()
    ready_r, ready_w = os.pipe()
    error = lib.lab_hold_mutex_in_native_thread(ready_w)
    if error:
        sys.exit(f"native_wait_with_handlers: no native thread: {os.strerror(error)}")
    os.read(ready_r, 1)
    pid = os.fork()
    if pid == 0:
        for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGALRM):
            signal.signal(signum, lambda *_: None)
        lib.lab_lock_mutex()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
