"""Not a deadlock: the child's lock.acquire() is orphaned, but it armed alarm(2) first.

As lock_held_at_fork.py, except that the child installs a SIGALRM handler that raises and calls
signal.alarm(2) before it blocks: after 2 s the handler's exception leaves the wait, the child
says so and exits 0. alarm() leaves no trace in /proc; the handler is the only sign.
"""

import os
import signal
import sys
import threading

lock = threading.Lock()
held = threading.Event()
never = threading.Event()


class Woken(Exception):
    pass


def hold():
    with lock:
        held.set()
        never.wait()


def wake(_signum, _frame):
    raise Woken


def main():
    threading.Thread(target=hold, name="holder", daemon=True).start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGALRM, wake)
        signal.alarm(2)
        try:
            lock.acquire()
        except Woken:
            print("child: the alarm ended the wait", flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
