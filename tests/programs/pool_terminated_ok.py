"""Ok: a pool whose busy workers its own ``terminate()`` stops with SIGTERM; the program exits 0.

The task signals that it runs, then sleeps; the main thread waits for that, calls
``pool.terminate()`` (SIGTERM to each worker, as the end of a ``with Pool()`` block does) and
``join()``, and exits 0. Each worker ends by SIGTERM from its own parent, not from the lab.
"""

import multiprocessing as mp
import sys
import time

ctx = mp.get_context("fork")
running = ctx.Event()


def task():
    running.set()
    time.sleep(600)


def main():
    pool = ctx.Pool(2)
    pool.apply_async(task)
    if not running.wait(timeout=60):
        sys.exit("pool_terminated_ok: the task never started")
    pool.terminate()
    pool.join()
    print("terminated", flush=True)


if __name__ == "__main__":
    main()
