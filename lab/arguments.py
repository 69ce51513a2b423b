"""The command-line declarations every entry point shares (``python -m lab``,
``python -m lab.celery_lab``, ``scripts/lldb_attach_child.py``) and the one mapping from an
error to an exit status. Declared here once, so that no entry point drifts from another."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from lab import interrupts
from lab.debugger_registry import DEBUGGERS
from lab.errors import BadInput, LabError
from lab.evidence import Evidence
from lab.verdicts import RUN_MISMATCH_STATUS

INTERNAL_ERROR_STATUS = 70
INTERRUPTED_STATUS = 130
DEBUGGER_CHOICES = ("auto", *DEBUGGERS, "none")


class OneLineParser(argparse.ArgumentParser):
    """Bad input is one line and exit status 2 (``BadInput``), never a usage dump."""

    def error(self, message):
        raise BadInput(message)


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def pid(text: str) -> int:
    try:
        return count(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}") from None


def add_debugger(parser: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--debugger`` with this command's own default. Declared on each (sub)parser, never on
    a shared parent: argparse shares a parent's action objects, so a ``set_defaults`` on one
    subcommand would change every sibling's default."""
    parser.add_argument("--debugger", choices=DEBUGGER_CHOICES, default=default,
                        help=f"{help} (default {default})" if default else help)


def add_timeout(parser: argparse.ArgumentParser, help: str) -> None:
    """``--timeout S`` and ``--no-timeout``, exclusive (``RunOptions.timeout``)."""
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--timeout", type=positive, metavar="S", help=help)
    limit.add_argument("--no-timeout", action="store_true",
                       help="no limit: watch until the tree ends, a deadlock is proven, or "
                       "Ctrl-C (a service)")


def add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="evidence base directory (default crash_dumps/, or "
                        "$LAB_CRASH_DUMPS)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines, no echo of the processes' output")


def main(parse: Callable[[], argparse.Namespace],
         dispatch: Callable[[argparse.Namespace], int]) -> int:
    """An entry point: SIGINT/SIGTERM made to unwind, the arguments parsed, ``dispatch``ed,
    and whatever is raised mapped to its exit status (``exit_status``; with ``--json``, a
    LabError's evidence on stdout first)."""
    parsed: list[argparse.Namespace] = []

    def body() -> int:
        interrupts.install()
        parsed.append(parse())
        return dispatch(parsed[0])

    return exit_status(body, lambda: bool(parsed and getattr(parsed[0], "json", False)))


def run_status(evidence: Evidence, as_json: bool) -> int:
    """How ``lab run`` ends: the evidence on stdout with ``--json``; 0 when the verdict is the
    expected one, else one line on stderr and RUN_MISMATCH_STATUS."""
    from lab.runner import mismatch

    if as_json:
        sys.stdout.write(evidence.to_json())
    why = mismatch(evidence)
    if why is None:
        return 0
    sys.stderr.write(f"lab: {why}\n")
    return RUN_MISMATCH_STATUS


def exit_status(body: Callable[[], int], wants_json: Callable[[], bool] = lambda: False) -> int:
    """Run an entry point's ``body``; map what it raises to one line on stderr and a status.

    A LabError exits with its own status (its evidence on stdout first when ``wants_json()``);
    Ctrl-C 130; a closed stdout 1; anything else is a bug of the lab: one line and 70, the
    traceback only with LAB_DEBUG=1.
    """
    try:
        return body()
    except LabError as exc:
        if exc.evidence is not None and wants_json():
            sys.stdout.write(exc.evidence.to_json())  # --json always gets the document
        sys.stderr.write(f"lab: error: {exc.line()}\n")
        return exc.exit_status
    except KeyboardInterrupt:
        sys.stderr.write("lab: error: interrupted by SIGINT\n")
        return INTERRUPTED_STATUS
    except BrokenPipeError:
        return 1
    except Exception as exc:
        if os.environ.get("LAB_DEBUG"):
            raise
        sys.stderr.write(f"lab: internal error: {type(exc).__name__}: {exc} "
                         "(set LAB_DEBUG=1 for the traceback)\n")
        return INTERNAL_ERROR_STATUS
