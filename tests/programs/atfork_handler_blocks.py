"""Deadlock inside os.fork(): the child's after_in_child handler takes a lock a parent thread held.

A background thread takes a threading.Lock and waits forever on an Event; the main thread then
registers ``lock.acquire`` as an ``os.register_at_fork(after_in_child=...)`` handler and forks.
The child runs the handler inside ``os.fork()`` itself (os_fork_impl -> PyOS_AfterFork_Child ->
the handler), where it sleeps in futex(FUTEX_WAIT_BITSET_PRIVATE, timeout NULL) forever: its
native stack shows the fork. The parent prints ``child PID`` (the handshake) and waits for it.
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
    os.register_at_fork(after_in_child=lock.acquire)  # line 28: runs in the child, blocks
    pid = os.fork()  # line 29: the child never returns from here
    if pid == 0:
        os._exit(0)
    print(f"child {pid}", flush=True)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
