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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from lab import arguments, debuggers  # noqa: E402
from lab.catch import CatchOptions, catch, outcome  # noqa: E402
from lab.options import default_out_base  # noqa: E402
from lab.progress import Progress  # noqa: E402


def _parser() -> arguments.OneLineParser:
    parser = arguments.OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="chromadb-tokio")
    parser.add_argument("--debugger", choices=debuggers.names(), default="lldb")
    parser.add_argument("--launcher", default="fork")
    parser.add_argument("--timeout", type=arguments.positive, metavar="S",
                        help="seconds the child may run (default: the scenario's)")
    arguments.add_out(parser)
    arguments.add_quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return arguments.main(lambda: _parser().parse_args(argv), _catch)


def _catch(args) -> int:
    options = CatchOptions(scenario=args.scenario, debugger=args.debugger,
                           launcher=args.launcher, timeout=args.timeout,
                           out_base=Path(args.out) if args.out else default_out_base(),
                           echo_output=not args.quiet)
    reason = outcome(catch(options, Progress(enabled=not args.quiet)))
    if reason:
        sys.stderr.write(f"lab: {reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
