"""Where a watched Python process crashed: its faulthandler dump, parsed into its evidence."""

from __future__ import annotations

import os
import re
from pathlib import Path

from lab import locksite, redact
from lab.evidence import FaultInfo, FaultThread, ProcessRecord, PythonFrame

FILE_PREFIX = "fault-"
FATAL_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT")  # faulthandler's
MAX_BYTES = 1024 * 1024  # a dump of every thread is a few KiB; more is not a dump
# faulthandler's format (Python/traceback.c, _Py_DumpTracebackThreads), 3.7 to 3.14:
#   Fatal Python error: Segmentation fault
#   Current thread 0x00007f3b0c1f6740 (most recent call first):
#     File "/app/worker.py", line 8 in resize_image
_ERROR = re.compile(r"Fatal Python error: (.+)")
_THREAD = re.compile(r"(Current thread|Thread) (0x[0-9a-fA-F]+)(?: \[(.*)\])? "
                     r"\(most recent call first\):")
_FRAME = re.compile(r'\s+File "(.*)", line (\d+|\?\?\?) in (.*)')


def parse(text: str) -> FaultInfo | None:
    """The last dump in ``text`` (a reused PID appends to the same file), or None."""
    starts = [m.start() for m in re.finditer(r"^Fatal Python error: ", text, re.MULTILINE)]
    if not starts:
        return None
    info: FaultInfo | None = None
    for line in text[starts[-1]:].splitlines():
        error, thread, frame = _ERROR.fullmatch(line), _THREAD.fullmatch(line), \
            _FRAME.fullmatch(line)
        if error and info is None:
            info = FaultInfo(error=error.group(1).strip())
        elif thread and info is not None:
            info.threads.append(FaultThread(ident=thread.group(2),
                                            current=thread.group(1) == "Current thread",
                                            name=thread.group(3)))
        elif frame and info is not None and info.threads:
            number = frame.group(2)
            info.threads[-1].python_frames.append(PythonFrame(
                file=frame.group(1), line=int(number) if number.isdigit() else None,
                function=frame.group(3)))
    return info


def crashed_thread(fault: FaultInfo) -> FaultThread | None:
    return next((t for t in fault.threads if t.current), fault.threads[0] if fault.threads
                else None)


def where(fault: FaultInfo) -> PythonFrame | None:
    """The frame a crash is told by: the innermost of the program's own (not the standard
    library's: ``ctypes.string_at`` is where it fell, ``resize_image`` what the program did)."""
    thread = crashed_thread(fault)
    if thread is None or not thread.python_frames:
        return None
    return next((f for f in thread.python_frames if not locksite.is_stdlib(f.file)),
                thread.python_frames[0])


def headline(record: ProcessRecord) -> str | None:
    """'crashed with SIGSEGV in resize_image (worker.py:8)', plain text; None without a dump."""
    if record.fault is None:
        return None
    frame = where(record.fault)
    signal = record.signal or record.fault.error
    if frame is None:
        return f"crashed with {signal} outside Python code (no Python frame)"
    return (f"crashed with {signal} in {frame.function} "
            f"({os.path.basename(frame.file)}:{frame.line if frame.line is not None else '?'})")


def collect(directory: Path | None, records: list[ProcessRecord], out_dir: Path) -> list[int]:
    """Attach each process's dump (``directory/fault-PID.txt``) to its record, and copy it,
    secrets masked, into ``out_dir``; return the PIDs that had one."""
    if directory is None or not Path(directory).is_dir():
        return []
    by_pid = {record.pid: record for record in records}
    found = []
    for path in sorted(Path(directory).glob(f"{FILE_PREFIX}*.txt")):
        pid = path.stem[len(FILE_PREFIX):]
        record = by_pid.get(int(pid)) if pid.isdigit() else None
        try:
            if record is None or not path.is_file() or path.stat().st_size == 0:
                continue
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = redact.text(handle.read(MAX_BYTES))
        except OSError:
            continue
        fault = parse(text)
        if fault is None:
            continue
        fault.file = path.name
        try:
            target = Path(out_dir) / path.name
            target.write_text(text, encoding="utf-8")
            os.chmod(target, 0o600)  # like output.txt: what a process knew
        except OSError:
            fault.file = None
        record.fault = fault
        found.append(record.pid)
    return found
