"""A process tree of a chosen size for the scaling bench: N children, a parent with T threads.

``python -m lab.bench.tree --children N --threads T [--deadlock]``: the parent starts T - 1
threads that wait on an Event, forks N children that block reading a pipe (blocked, never a
proven deadlock), and waits for them. With ``--deadlock`` one of the threads holds a lock and
the last child, forked after all the others, acquires it: a deadlock the watcher must find
among everything else it follows. The tree runs until it is killed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

LOCK = threading.Lock()


def _hold(held: threading.Event, never: threading.Event) -> None:
    with LOCK:
        held.set()
        never.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.tree")
    parser.add_argument("--children", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--deadlock", action="store_true")
    args = parser.parse_args(argv)
    never = threading.Event()
    extra = args.threads - 1
    if args.deadlock:
        held = threading.Event()
        threading.Thread(target=_hold, args=(held, never), name="lock-holder",
                         daemon=True).start()
        held.wait()
        extra -= 1
    for index in range(max(0, extra)):
        threading.Thread(target=never.wait, name=f"idle-{index}", daemon=True).start()
    read_end, write_end = os.pipe()
    sleepers = args.children - 1 if args.deadlock else args.children
    for _ in range(sleepers):
        if os.fork() == 0:
            os.close(write_end)
            os.read(read_end, 1)  # blocked on a pipe: a wait that could still end
            os._exit(0)
    if args.deadlock and os.fork() == 0:
        LOCK.acquire()  # held by a thread this child does not have
        os._exit(0)
    os.close(read_end)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return 0


if __name__ == "__main__":
    sys.exit(main())
