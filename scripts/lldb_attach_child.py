"""Catch the ChromaDB fork child in LLDB and write the evidence under crash_dumps/<run-id>/.

The child stops itself before it touches ChromaDB; LLDB attaches, SIGTRAP is made to stop,
and the child runs on. On macOS libdispatch traps (EXC_BREAKPOINT, brk #0x1); on Linux the
child deadlocks, which the lab proves from /proc before it interrupts the child. Either way
LLDB records the stop reason, every stack, the frame, its disassembly and the registers.

Usage:
    python scripts/lldb_attach_child.py
    python scripts/lldb_attach_child.py --scenario breakpoint-trap --debugger gdb --out /tmp/dumps

Exit status: 0 when the crash or deadlock was captured; 1 when the child did neither (or no
stack was recorded); the lab's error statuses otherwise (5: no debugger, 6: ptrace refused...).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from lab import debuggers, interrupts  # noqa: E402
from lab.catch import CatchOptions, catch, outcome  # noqa: E402
from lab.errors import BadInput, LabError  # noqa: E402
from lab.progress import Progress  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise BadInput(message)


def main(argv: list[str] | None = None) -> int:
    interrupts.install()  # SIGINT/SIGTERM unwind through the catch's cleanup
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="chromadb-tokio")
    parser.add_argument("--debugger", choices=debuggers.names(), default="lldb")
    parser.add_argument("--launcher", default="fork")
    parser.add_argument("--timeout", type=float, help="seconds the child may run (default: "
                        "the scenario's)")
    parser.add_argument("--out", help="evidence base directory (default: $LAB_CRASH_DUMPS or "
                        "crash_dumps/)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    try:
        args = parser.parse_args(argv)
        out = Path(args.out or os.environ.get("LAB_CRASH_DUMPS", "crash_dumps"))
        options = CatchOptions(scenario=args.scenario, debugger=args.debugger,
                               launcher=args.launcher, timeout=args.timeout, out_base=out,
                               echo_output=not args.quiet)
        evidence = catch(options, Progress(enabled=not args.quiet))
    except LabError as error:
        sys.stderr.write(f"lab: error: {error.line()}\n")
        return error.exit_status
    reason = outcome(evidence)
    if reason:
        sys.stderr.write(f"lab: {reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
