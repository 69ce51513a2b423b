"""Deadlock (child): it acquires a threading.Lock that a thread of its parent held at fork.

A background thread takes the lock and waits forever on an Event; once it holds the lock the
main thread forks. The child has no such thread, so its ``lock.acquire()`` sleeps in
futex(FUTEX_WAIT_BITSET_PRIVATE, timeout NULL) forever: the verdict for the child must be
``deadlock``. The parent waits for the child and exits with its status (128 + N for signal N).
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
        lock.acquire()  # blocks forever: the holder thread does not exist in the child
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
