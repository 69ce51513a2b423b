"""Hang (child, not a deadlock): the child retries lock.acquire(timeout=1.0) forever.

The lock was held at fork by a thread the child lacks, so every attempt times out: the child
sleeps in futex waits WITH a timeout, never one without, so the verdict for the child must be
``hang``. The parent waits for the child and exits with its status (128 + N for signal N).
"""

import os
import sys
import threading

lock = threading.Lock()
held = threading.Event()
never = threading.Event()


def hold():
    with lock:
        held.set()
        never.wait()


def main():
    threading.Thread(target=hold, name="holder", daemon=True).start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        while not lock.acquire(timeout=1.0):  # timed futex waits, retried forever
            pass
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
