"""Deadlock (pool worker): a multiprocessing.Pool forked while a thread of the parent held a lock.

A background thread takes a threading.Lock and waits forever on an Event; then the main thread
starts a fork-method ``multiprocessing.Pool(1)`` and submits a task that takes the same lock.
The worker has no copy of the holder thread, so its ``lock.acquire()`` sleeps in
futex(FUTEX_WAIT_BITSET_PRIVATE, timeout NULL) forever. Once the task is submitted the main
thread prints ``worker PID`` (the handshake) and waits for a result that never comes. Runs on
any CPython 3 (the tests run it with Debian's own /usr/bin/python3, which has no debug package).
"""

import multiprocessing
import sys
import threading

lock = threading.Lock()
held = threading.Event()
never = threading.Event()


def hold():
    with lock:
        held.set()
        never.wait()


def task(_):
    with lock:  # blocks forever in the worker: the holder thread was not copied
        return "unreachable"


def main():
    threading.Thread(target=hold, name="holder", daemon=True).start()
    held.wait()
    pool = multiprocessing.get_context("fork").Pool(1)
    result = pool.map_async(task, [0])
    print(f"worker {pool._pool[0].pid}", flush=True)
    result.wait()
    sys.exit(1)


if __name__ == "__main__":
    main()
