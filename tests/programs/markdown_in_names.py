"""Deadlock (child) under a name full of Markdown: what a hostile or unlucky program looks like.

Run as ``python -c "$(cat markdown_in_names.py)" ARGS...`` so that its argv carries these lines
too. The process renames itself (comm, at most 15 bytes) to ``a|b`<i>*[x]#``; its threads and
its child inherit the name. A thread holds a lock when the main thread forks; the child's
``lock.acquire()`` sleeps in a futex wait forever: the verdict for the child is ``deadlock``.
"""

import os
import threading

NAME = "a|b`<i>*[x]#"

with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
    comm.write(NAME)
lock = threading.Lock()
held = threading.Event()


def hold():
    with lock:
        held.set()
        threading.Event().wait()


threading.Thread(target=hold, name=NAME, daemon=True).start()
held.wait()
if os.fork() == 0:
    lock.acquire()  # blocks forever: the holder thread does not exist in the child
    os._exit(0)
os.wait()
