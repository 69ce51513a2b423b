"""Shared body of the ``multiprocessing.Process`` launchers; each start method is its own module."""

from __future__ import annotations

import multiprocessing


class ProcessLauncher:
    """``multiprocessing.get_context(method).Process(target, args)``, started at once; ``method``
    None is the default context, and ``started_with`` says which method that was."""

    method: str | None = ""

    def __init__(self, target, args=()):
        context = multiprocessing.get_context(self.method)
        self.started_with = context.get_start_method()
        self.process = context.Process(target=target, args=args,
                                       name=f"lab-{self.method or 'default'}")
        self.process.start()
        self.pid = self.process.pid

    def wait(self) -> int:
        """Join; return the exit code (negative: the signal that killed it), as multiprocessing."""
        self.process.join()
        return self.process.exitcode
