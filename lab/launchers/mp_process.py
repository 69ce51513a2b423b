"""Shared body of the ``multiprocessing.Process`` launchers; each start method is its own module."""

from __future__ import annotations

import multiprocessing


class ProcessLauncher:
    """``multiprocessing.get_context(method).Process(target, args)``, started at once."""

    method = ""

    def __init__(self, target, args=()):
        context = multiprocessing.get_context(self.method)
        self.process = context.Process(target=target, args=args, name=f"lab-{self.method}")
        self.process.start()
        self.pid = self.process.pid

    def wait(self) -> int:
        """Join; return the exit code (negative: the signal that killed it), as multiprocessing."""
        self.process.join()
        return self.process.exitcode
