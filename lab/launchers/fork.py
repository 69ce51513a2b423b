"""Raw ``os.fork()``: the child runs the target in the copied interpreter, then ``os._exit``."""

from __future__ import annotations

import os
import sys
import traceback

method = "fork"
PICKLES_ARGS = False


class Popen:
    def __init__(self, target, args=()):
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            os._exit(_run_child(target, args))

    def wait(self) -> int:
        """Wait for the child; return its exit code, or -N when signal N killed it."""
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


class InterpreterExit(SystemExit):
    """Raised by a child that must leave through the interpreter's own shutdown (atexit,
    garbage collection of module globals), as a plain ``sys.exit`` in forked code does —
    instead of the ``os._exit`` every launcher otherwise uses."""


def _run_child(target, args) -> int:
    code = 1
    try:
        target(*args)
        code = 0
    except InterpreterExit:
        raise  # unwinds the copied parent frames; the interpreter then finalizes and exits
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code
