"""OK: 40 waiting threads at a fork, so that the fork report is longer than PIPE_BUF.

The child exits 0 at once; the parent releases its threads and exits 0. The lab must still
receive the whole report (spooled beside its FIFO) and list all 40 threads.
"""

import os
import threading

release = threading.Event()
threads = [threading.Thread(target=release.wait, name=f"idle-{n:02d}") for n in range(40)]
for thread in threads:
    thread.start()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
release.set()
for thread in threads:
    thread.join()
