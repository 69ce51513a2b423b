"""Hang (child, spinning): the child runs a pure Python loop at 100% CPU forever.

It never sleeps, so it is never a deadlock; it does not finish, so the verdict for the child
must be ``hang``. The parent waits for the child and exits with its status (128 + N for
signal N).
"""

import os
import sys


def main():
    pid = os.fork()
    if pid == 0:
        while True:  # spins forever
            pass
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
