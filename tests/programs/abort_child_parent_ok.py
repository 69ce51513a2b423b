"""Crash (child, SIGABRT): the child calls os.abort(); the parent reaps it and exits 0.

The parent consumes the child's wait status itself, so only a watcher of the child sees the
crash. faulthandler is disabled so nothing catches the signal first. The parent reports the
child's fate on stderr ("abort_child_parent_ok: child PID killed by SIGABRT").
"""

import faulthandler
import os
import signal
import sys


def main():
    pid = os.fork()
    if pid == 0:
        faulthandler.disable()
        os.abort()  # abort(3): SIGABRT
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        fate = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    else:
        fate = f"exited with status {os.waitstatus_to_exitcode(status)}"
    print(f"abort_child_parent_ok: child {pid} {fate}", file=sys.stderr)
    sys.exit(0)


if __name__ == "__main__":
    main()
