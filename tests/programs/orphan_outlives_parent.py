"""A child that outlives its parent by a moment: it exits on the EOF its parent's exit gives
it, so it always ends as an orphan, which its new parent (init, or a subreaper) must reap.

The parent works for a second first (a worker's job: long enough for a watcher that polls the
tree to have seen the child).
"""

import os
import time

WORK_S = 1.0

read_end, write_end = os.pipe()
if os.fork() == 0:
    os.close(write_end)
    os.read(read_end, 1)  # EOF once the parent has exited
    os._exit(0)
os.close(read_end)
time.sleep(WORK_S)
print("parent: exiting before its child", flush=True)
