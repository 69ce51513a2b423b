"""Block the main thread forever in futex: acquire a threading.Lock twice (tests assert line 10)."""

import threading

lock = threading.Lock()
lock.acquire()
print("ready", flush=True)


lock.acquire()  # line 10: blocks forever in futex(FUTEX_WAIT_BITSET)
