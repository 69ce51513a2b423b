"""SIGINT and SIGTERM become ``Interrupted``, raised where the lab can still clean up.

A Python signal handler runs between two bytecodes of the main thread, so an exception it
raises can land anywhere. One place must not be interrupted: between starting a process and
registering it with its owner. ``subprocess.Popen`` that is interrupted after its fork (while it
waits for the exec on its error pipe) loses the child's PID, and so does an assignment that has
not happened yet: the process runs on, unowned, after the lab exits. ``deferred()`` holds the
exception back until the block that starts and registers the process has finished.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from lab.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_depth = 0  # how many deferred() blocks the main thread is in
_pending: int | None = None  # a signal that arrived inside one
_received: int | None = None  # the signal that interrupted the lab; check() raises it again
_inherited_ignored: tuple[int, ...] = ()  # ignored when the lab started (nohup, a background job)


def _handler(signum: int, _frame) -> None:
    global _pending
    if _depth:
        # Not SIG_IGN yet: a process started in this block would inherit it and could not be
        # stopped with SIGTERM.
        _pending = signum
        return
    _raise(signum)


def _raise(signum: int) -> None:
    global _received
    _received = signum
    # The first signal interrupts; more of them must not interrupt the cleanup it starts.
    for each in SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise Interrupted(signum)


def install() -> None:
    """Make SIGINT and SIGTERM raise ``Interrupted`` in the main thread (once, the first)."""
    global _pending, _received, _inherited_ignored
    _pending = _received = None
    if not _inherited_ignored:
        _inherited_ignored = tuple(s for s in SIGNALS if signal.getsignal(s) == signal.SIG_IGN)
    for each in SIGNALS:
        signal.signal(each, _handler)


def check() -> None:
    """Raise ``Interrupted`` again when a signal already interrupted the lab.

    The handler raises wherever the main thread is, and an ``except Exception`` there (a
    library's, or a best-effort step of the lab's) can swallow it; the signals are ignored from
    then on, so without this the lab would run on to the end and exit 0. The loops the lab waits
    in call it.
    """
    if _received is not None:
        raise Interrupted(_received)


def inherited_ignored() -> tuple[int, ...]:
    """The signals the lab's own parent had it ignore: what the lab starts must ignore them too,
    as it would have without the lab (its handlers end at exec; an ignored signal would not)."""
    return _inherited_ignored


@contextmanager
def deferred() -> Iterator[None]:
    """Run the block to its end; an interrupt that arrived meanwhile is raised after it.

    Use it around starting a process and recording it where the cleanup will find it.
    """
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            _raise(signum)  # the interrupt outranks whatever the block raised
