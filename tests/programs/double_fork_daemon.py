"""A classic daemon: the middle child calls setsid() and forks again, then exits; the daemon
(the grandchild, in a session of its own) sleeps. The root waits for the middle and exits 0."""

import os
import sys
import time

ready_r, ready_w = os.pipe()
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:  # the daemon
        os.write(ready_w, f"{os.getpid()}\n".encode())
        time.sleep(3600)  # a timed wait: it could still end, so at most a hang
        os._exit(0)
    print(f"daemon {os.read(ready_r, 64).decode().strip()} is running", flush=True)
    os._exit(0)
os.waitpid(middle, 0)
sys.exit(0)
