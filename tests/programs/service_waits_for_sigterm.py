"""Not a deadlock: a single-threaded service waits in Event().wait() for its SIGTERM handler.

It prints "ready" and waits; a supervisor's SIGTERM makes the handler set the event, and it
exits 0. With ``--timer S`` an interval timer (setitimer) sends SIGALRM after S seconds to the
same kind of handler instead.
"""

import signal
import sys
import threading

stop = threading.Event()


def main():
    for signum in (signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    if sys.argv[1:2] == ["--timer"]:
        signal.setitimer(signal.ITIMER_REAL, float(sys.argv[2]))
    print("ready", flush=True)
    stop.wait()
    print("stopping", flush=True)


if __name__ == "__main__":
    main()
