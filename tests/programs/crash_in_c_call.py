"""Crash (child, SIGSEGV in a C call): resize_image hands C a NULL pointer; the parent exits 0.

Nothing here enables faulthandler: under `lab watch` the lab's startup hook does, into a file
of the child's own, so the evidence says where it crashed: in resize_image, at line 15 (the
ctypes call itself is in the standard library, one frame further in).
"""

import ctypes
import os
import signal
import sys


def resize_image(pixels):
    return ctypes.string_at(pixels)  # strlen(NULL): SIGSEGV


def main():
    pid = os.fork()
    if pid == 0:
        resize_image(0)
        os._exit(0)  # not reached
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        print(f"crash_in_c_call: child {pid} killed by "
              f"{signal.Signals(os.WTERMSIG(status)).name}", file=sys.stderr)
    sys.exit(0)


if __name__ == "__main__":
    main()
