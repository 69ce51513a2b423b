"""The command-line declarations every entry point shares (``python -m lab``,
``python -m lab.celery_lab``, ``scripts/lldb_attach_child.py``) and the one mapping from an
error to an exit status. Declared here once, so that no entry point drifts from another."""

from __future__ import annotations

import argparse
import difflib
import os
import re
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
    """Bad input is one line and exit status 2 (``BadInput``), never a usage dump; a mistyped
    option names the closest one (``--timout``: did you mean ``--timeout``?)."""

    def error(self, message):
        unknown = re.match(r"unrecognized arguments: (.+)", message)
        if unknown:
            for word in unknown.group(1).split():
                close = difflib.get_close_matches(word.split("=")[0], self._all_options(), 1)
                if word.startswith("-") and close:
                    raise BadInput(message, f"did you mean {close[0]}?")
        raise BadInput(message)

    def _all_options(self) -> list[str]:
        """Every option string of this parser and of its subcommands'."""
        found = list(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += list(sub._option_string_actions)
        return sorted(set(found))


CONSOLE_SCRIPT = "fork-crash-lab"  # pyproject.toml's [project.scripts]


def prog_name(default: str) -> str:
    """The name the user typed: the console script's, else ``default`` (``python -m lab``)."""
    typed = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return CONSOLE_SCRIPT if typed == CONSOLE_SCRIPT else default


def version() -> str:
    """``fork-crash-lab X.Y.Z``: the installed distribution's, else the checkout's pyproject."""
    from importlib import metadata

    try:
        return f"{CONSOLE_SCRIPT} {metadata.version(CONSOLE_SCRIPT)}"
    except metadata.PackageNotFoundError:
        from pathlib import Path

        text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
        found = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
        return f"{CONSOLE_SCRIPT} {found.group(1) if found else 'unknown'}"


# The statuses any command that runs something can end with, besides its own.
LAB_ERROR_STATUSES = ("2 bad input, 4 command not found, 5 debugger missing, 6 ptrace refused "
                      "(run as root, cap_add: SYS_PTRACE, or kernel.yama.ptrace_scope), 7 the "
                      "target exited during the attach, 8 the debugger failed, 9 a package is "
                      "missing, 15 the evidence could not be written, 70 an internal error of "
                      f"the lab, {INTERRUPTED_STATUS}/143 interrupted (SIGINT/SIGTERM)")


def exit_statuses(own: str, errors: str = LAB_ERROR_STATUSES) -> str:
    """A subcommand's ``--help`` epilog: its own statuses, then the lab's errors."""
    return f"exit status: {own}; {errors}."


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


def tell(evidence: Evidence, quiet: bool) -> None:
    """The run's story in its last lines on stderr (``lab.ending``), unless ``quiet``."""
    if not quiet:
        from lab import ending

        sys.stderr.write(ending.text(evidence))
        sys.stderr.flush()


def run_status(evidence: Evidence, as_json: bool, quiet: bool = False) -> int:
    """How ``lab run`` ends: the evidence on stdout with ``--json``, the story on stderr
    (unless ``quiet``); 0 when the verdict is the expected one, else one line on stderr and
    RUN_MISMATCH_STATUS."""
    from lab.runner import mismatch

    if as_json:
        sys.stdout.write(evidence.to_json())
    tell(evidence, quiet)
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
