"""OK: a program whose own sitecustomize (own_site/, on PYTHONPATH) must still run under the lab.

It prints what its sitecustomize left, whether the lab's hook is loaded too, then forks once
while a thread of its own waits (a fork report with that thread) and exits 0.
"""

import os
import sys
import threading

import sitecustomize

print(f"{sitecustomize.MARKER}; OWN_SITECUSTOMIZE={os.environ.get('OWN_SITECUSTOMIZE')}; "
      f"lab hook loaded: {'_lab_fork_hook' in sys.modules}", flush=True)
release = threading.Event()
waiter = threading.Thread(target=release.wait, name="waiter")
waiter.start()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
release.set()
waiter.join()
