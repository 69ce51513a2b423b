"""Many threads with deep Python stacks: a py-spy dump of it takes long enough to be caught.

``deep_threads.py N DEPTH``: starts N threads that each recurse DEPTH frames deep and wait on
an Event forever, prints ``ready`` (the handshake) and waits the same way in the main thread.
"""

import sys
import threading

count, depth = int(sys.argv[1]), int(sys.argv[2])
never = threading.Event()
started = threading.Barrier(count + 1)


def deep(n):
    if n:
        return deep(n - 1)
    started.wait()
    never.wait()


for number in range(count):
    threading.Thread(target=deep, args=(depth,), name=f"deep-{number}", daemon=True).start()
started.wait()
print("ready", flush=True)
never.wait()
