"""Deadlock (child, a user's program): a cache's refresher thread is inside `with self._lock:`.

Nothing here knows the lab. The refresher takes the cache's lock and waits, holding it, for a
stop that never comes; the main thread then starts a worker with multiprocessing's fork start
method. The worker's first ``cache.get`` waits forever for a lock whose holder it does not
have. Under `lab watch`, the lab's fork hook must name the refresher as the culprit, inside
`with self._lock:` at line 22, waiting at line 24.
"""

import multiprocessing
import threading


class Cache:
    def __init__(self):
        self._lock = threading.Lock()
        self.entries = {"answer": 42}
        self.refreshing = threading.Event()
        self.stopping = threading.Event()

    def refresh(self):
        with self._lock:
            self.refreshing.set()
            self.stopping.wait()  # holds the lock while it waits

    def get(self, key):
        with self._lock:
            return self.entries.get(key)


def work(cache):
    print("worker: got", cache.get("answer"), flush=True)


def main():
    cache = Cache()
    threading.Thread(target=cache.refresh, name="refresher", daemon=True).start()
    cache.refreshing.wait()
    worker = multiprocessing.get_context("fork").Process(target=work, args=(cache,))
    worker.start()
    worker.join()
    return worker.exitcode


if __name__ == "__main__":
    raise SystemExit(main())
