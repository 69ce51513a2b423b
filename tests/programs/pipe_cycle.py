"""Deadlock across processes: parent and child each read the pipe the other should write.

Two pipes: the parent reads ``to_parent`` and holds the write end of ``to_child``; the child
reads ``to_child`` and holds the write end of ``to_parent``. Each waits for the other to write
first: no thread is left that could, no timeout, no handler for a signal from outside. Prints
the child's PID once the pipes are set up; stdin is never read.
"""

import os
import sys


def main():
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(to_child_w)
        os.close(to_parent_r)
        os.read(to_child_r, 1)  # the parent writes first, it thinks
        os.write(to_parent_w, b"x")
        os._exit(0)
    os.close(to_child_r)
    os.close(to_parent_w)
    print(pid, flush=True)
    os.read(to_parent_r, 1)  # the child writes first, it thinks
    os.write(to_child_w, b"x")
    os.waitpid(pid, 0)
    sys.exit(0)


if __name__ == "__main__":
    main()
