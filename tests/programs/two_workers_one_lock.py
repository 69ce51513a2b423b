"""Deadlock (both children): two identical workers forked while a thread held the lock both
acquire; each must get the same verdict."""

import os
import sys
import threading

lock = threading.Lock()
held = threading.Event()
never = threading.Event()


def hold():
    with lock:
        held.set()
        never.wait()


def main():
    threading.Thread(target=hold, name="holder", daemon=True).start()
    held.wait()
    workers = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            lock.acquire()
            os._exit(0)
        workers.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in workers]
    sys.exit(max(abs(code) for code in codes))


if __name__ == "__main__":
    main()
