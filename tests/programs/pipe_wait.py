"""Hang (child, not a deadlock): the child blocks in os.read() on a pipe nobody writes.

The parent keeps the write end open and never writes, so the child sleeps in read(2), not in
a futex: the verdict for the child must be ``hang``. (If the parent dies, the child reads EOF
and exits 0.) The parent waits for the child and exits with its status (128 + N for signal N).
"""

import os
import sys


def main():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        os.read(read_end, 1)  # blocks until the parent writes (never) or exits
        os._exit(0)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
