"""Deadlock (child): a cache's refresher thread holds ``self._lock`` when a worker is forked.

The worker's first ``cache.get()`` takes the same lock, inherited locked from a thread it does
not have: its only thread sleeps in futex(FUTEX_WAIT_BITSET_PRIVATE, timeout NULL) forever.
The fix the lab must name is the program's own: re-create ``self._lock`` in the child.
"""

import os
import sys
import threading


class Cache:
    def __init__(self):
        self._lock = threading.Lock()
        self.refreshing = threading.Event()
        self.never = threading.Event()
        self.data = {}

    def refresh(self):
        with self._lock:
            self.refreshing.set()
            self.never.wait()  # a refresh that takes long (here: forever)

    def get(self, key):
        with self._lock:
            return self.data.get(key)


def main():
    cache = Cache()
    threading.Thread(target=cache.refresh, name="refresher", daemon=True).start()
    cache.refreshing.wait()
    pid = os.fork()
    if pid == 0:
        cache.get("answer")  # blocks forever
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status) if status else 0)


if __name__ == "__main__":
    main()
