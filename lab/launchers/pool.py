"""Shared body of the ``ProcessPoolExecutor`` launchers: one worker, one job."""

from __future__ import annotations

import multiprocessing
import traceback
from concurrent.futures import ProcessPoolExecutor


class PoolLauncher:
    """Submit ``target(*args)`` to a one-worker ``ProcessPoolExecutor`` of a start method.

    ``pid`` is the worker's pid. ``wait`` returns 0 when the job returned, 1 when it raised
    (the exception is printed, as a caller that looked would see it).
    """

    method = ""

    def __init__(self, target, args=()):
        self.executor = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context(self.method))
        self.future = self.executor.submit(target, *args)
        self.pid = next(iter(self.executor._processes))

    def wait(self) -> int:
        try:
            self.future.result()
            return 0
        except BaseException:
            traceback.print_exc()
            return 1
        finally:
            self.executor.shutdown(wait=True)
