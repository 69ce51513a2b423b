"""Error: the child exits with status 3; the parent exits with the child's status, 3.

The verdict for both must be ``error``.
"""

import os
import sys


def main():
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
