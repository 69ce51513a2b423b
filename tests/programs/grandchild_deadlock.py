"""Deadlock (grandchild): the lock_held_at_fork pattern, one generation down.

The parent forks a child. The child starts a thread that takes a threading.Lock and waits
forever, then forks a grandchild whose ``lock.acquire()`` sleeps in
futex(FUTEX_WAIT_BITSET_PRIVATE, timeout NULL) forever: the verdict for the grandchild must
be ``deadlock``. Each process waits for its own child and exits with its status (128 + N for
signal N).
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


def wait(pid):
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def child():
    threading.Thread(target=hold, name="holder", daemon=True).start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        lock.acquire()  # blocks forever: the holder thread does not exist in the grandchild
        os._exit(0)
    os._exit(wait(pid))


def main():
    pid = os.fork()
    if pid == 0:
        child()
    sys.exit(wait(pid))


if __name__ == "__main__":
    main()
