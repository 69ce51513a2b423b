"""Ok: the child waits 0.5 s for a lock held at fork by a thread it lacks, gives up, exits 0.

Its ``lock.acquire(timeout=0.5)`` sleeps in a futex wait WITH a timeout, which must never be
called a deadlock. The child exits 0 when the acquire returns False (1 if it got the lock);
the parent waits for it and exits with its status, so the verdict for both must be ``ok``.
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
        got = lock.acquire(timeout=0.5)  # a timed futex wait; returns False
        os._exit(1 if got else 0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
