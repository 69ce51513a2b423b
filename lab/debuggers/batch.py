"""A debugger in batch mode: its output teed to a transcript, marker lines waited for, cleanup.

The command files the lab ships print marker lines (``# lab-step: NAME``, echoed by lldb as a
comment and by gdb through ``echo``) before each step; ``Session.steps`` lists those reached,
so a driver can tell which step failed and a caller can wait for one (a handshake on the
debugger's own output, never a sleep). The lab's own notes go into the same transcript as
``# lab KEY: VALUE`` lines.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lab import interrupts, process as processes, redact
from lab.errors import DebuggerFailed, OutputNotWritable

NOTE_PREFIX = "# lab "  # the same note format as the GDB/MI driver's gdb.txt
MARKER = re.compile(r"^(?:\(lldb\) )?# lab-step: (?P<step>[a-z-]+)\s*$")
EXIT_TIMEOUT_S = 5.0  # terminate, then kill: each step's deadline


class Session:
    """One debugger process run to completion; ``lines`` and ``steps`` fill as it prints."""

    def __init__(self, argv: list[str], transcript: Path, notes: dict[str, str] | None = None):
        self.argv = argv
        self.path = Path(transcript)
        self.lines: list[str] = []
        self.steps: list[str] = []
        self.process: subprocess.Popen | None = None
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self._eof = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 0600: a transcript shows memory (strings, registers) of the target
            self._file = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                           0o600), "w", encoding="utf-8")
        except OSError as error:
            raise OutputNotWritable(f"cannot write {self.path}: {error.strerror}") from None
        for key, value in (notes or {}).items():
            self.note(key, value)

    def start(self) -> None:
        """Start the debugger; raises DebuggerFailed when it cannot be executed."""
        self.note("command", " ".join(redact.argv(self.argv)))
        try:
            with interrupts.deferred():  # close() must know the debugger it started
                self.process = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    # Its own process group: a terminal's Ctrl-C reaches the lab, which cleans up.
                    start_new_session=True,
                )
        except OSError as error:
            self.close()
            raise DebuggerFailed(f"could not start {self.argv[0]}: {error}") from None
        self._reader = threading.Thread(target=self._read, name="lab-debugger-output",
                                        daemon=True)
        self._reader.start()

    def note(self, key: str, value: str) -> None:
        """Add ``# lab KEY: VALUE`` to the transcript (one line, secrets masked)."""
        self._write(f"{NOTE_PREFIX}{key}: {redact.text(' '.join(str(value).split()))}\n")

    def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` or the debugger exits, at most ``timeout`` s; return done()."""
        end = time.monotonic() + max(timeout, 0.0)
        with self._changed:
            while not done() and not self.finished:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)  # woken by each line the debugger prints
        return done()

    def reached(self, step: str) -> bool:
        return step in self.steps

    @property
    def finished(self) -> bool:
        """The debugger exited and all of its output has been read."""
        return self._eof

    @property
    def last_step(self) -> str | None:
        return self.steps[-1] if self.steps else None

    def text(self) -> str:
        return "".join(self.lines)

    def errors(self) -> list[str]:
        """The debugger's ``error: ...`` lines, in order."""
        return [line.strip() for line in self.lines if line.lstrip().startswith("error:")]

    def wait(self, timeout: float) -> int | None:
        """Wait for the debugger to exit and its output to be read; None when it did not."""
        if self.process is None:
            return None
        self.wait_for(lambda: False, timeout)
        if not self.finished:
            return None
        return self.process.returncode

    def close(self) -> bool:
        """Stop the debugger if it still runs (SIGTERM, then SIGKILL); True when it had exited."""
        process = self.process
        clean = process is None or processes.end_popen(process, EXIT_TIMEOUT_S)
        if process is not None:
            # What the debugger started (lldb's lldb-server) shares its new process group and
            # may outlive it, holding the output pipe and the target: nothing of it may stay.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._reader is not None:
            self._reader.join(EXIT_TIMEOUT_S)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if not self._file.closed:
            self._file.flush()
            try:
                os.fsync(self._file.fileno())
            except OSError:
                pass
            self._file.close()
        return clean

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = redact.text(raw.decode("utf-8", errors="replace"))
            if not line.endswith("\n"):
                line += "\n"
            self._write(line)
            with self._changed:
                self.lines.append(line)
                match = MARKER.match(line.rstrip("\n"))
                if match:
                    self.steps.append(match["step"])
                self._changed.notify_all()
        self.process.wait()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _write(self, text: str) -> None:
        with self._changed:
            if not self._file.closed:
                self._file.write(text)
                self._file.flush()
