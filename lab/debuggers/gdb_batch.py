"""Drive ``gdb --batch`` with the lab's static command files to catch a process at its stop.

The GDB/MI driver (``gdb.py``) records a process at the moment it attaches; catching a trap
means attaching, continuing and recording at the stop that follows, which a batch run of
``catch.gdb`` does. Its console transcript is read by ``lab.parsers.gdb_console``.
"""

from __future__ import annotations

from pathlib import Path

from lab.debuggers import batch, preflight
from lab.errors import LabError
from lab.evidence import DebuggerInfo

EXECUTABLE = "gdb"
REMEDY = "install gdb: apt-get install gdb"
TRANSCRIPT_NAME = "gdb.txt"
SCRIPTS = Path(__file__).resolve().parent
CATCH_SCRIPT = SCRIPTS / "catch.gdb"
DETACH_SCRIPT = SCRIPTS / "detach.gdb"
# Before the target is read: no ~/.gdbinit (--nx), no scripts the target ships, no network.
EARLY_SETTINGS = ("set auto-load python-scripts off", "set debuginfod enabled off")


def find() -> str:
    """The path of the gdb executable; raises DebuggerMissing."""
    return preflight.find(EXECUTABLE, REMEDY)


def catch_argv(gdb: str, pid: int) -> list[str]:
    early = [arg for setting in EARLY_SETTINGS for arg in ("-iex", setting)]
    return [gdb, "--batch", "--nx", *early, "-p", str(pid), "-x", str(CATCH_SCRIPT),
            "-x", str(DETACH_SCRIPT)]


def parse(text: str, transcript: str | None = TRANSCRIPT_NAME) -> DebuggerInfo:
    from lab.parsers.gdb_console import parse_gdb_console

    return parse_gdb_console(text, transcript)


def attach_error(session: batch.Session, pid: int) -> LabError | None:
    """The error a failed attach printed ("ptrace: Operation not permitted."), or None."""
    for line in session.lines:
        text = line.strip()
        if text.startswith("ptrace:") or text.startswith("Could not attach"):
            return preflight.attach_failure("gdb", pid, text)
    return None
