"""Measures its own pause: a thread notes the longest gap between two turns of its 1 ms beat.

Prints ``ready`` once the beat runs (the handshake); when stdin closes, prints
``longest-gap SECONDS`` (the longest time the beat was held, e.g. by a debugger's ptrace stop)
and exits 0.
"""

import sys
import threading
import time

longest = 0.0
stop = threading.Event()
beating = threading.Event()


def beat():
    global longest
    last = time.monotonic()
    beating.set()
    while not stop.is_set():
        time.sleep(0.001)
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now


threading.Thread(target=beat, name="beat", daemon=True).start()
beating.wait()
print("ready", flush=True)
sys.stdin.read()
stop.set()
print(f"longest-gap {longest:.4f}", flush=True)
