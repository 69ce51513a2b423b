"""The watched processes' output: drained always, redacted, kept within bounds in output.txt.

The tee reads the pipe in blocks, never a whole line at once: a 300 MB line without a newline
costs at most ``MAX_LINE`` bytes of memory. It keeps the first ``HEAD_BYTES`` and the last
``TAIL_BYTES`` of the output in ``output.txt`` and says how much it dropped in between, so a
program that prints 500 MB runs at its own speed and leaves a file a person can open. A write
that fails (a full disk) stops the file, never the draining: a program blocked on a full pipe
would otherwise turn any run into a hang.
"""

from __future__ import annotations

import collections
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lab import redact

READ_BLOCK = 1 << 16
MAX_LINE = 1 << 16  # longer lines are cut here; the rest of the line is counted, not kept
HEAD_BYTES = 8 << 20
TAIL_BYTES = 8 << 20
PRIVATE = 0o600  # the output may hold anything the program knew


@dataclass
class OutputStats:
    """What became of the output, for the evidence (``evidence.output``)."""

    file: str
    bytes_read: int = 0
    bytes_written: int = 0
    lines_cut: int = 0  # lines longer than MAX_LINE, cut there
    dropped_bytes: int = 0  # between the head and the tail
    error: str | None = None  # why output.txt stopped (e.g. the disk is full)
    notes: list[str] = field(default_factory=list)


class OutputTee:
    """Copy a process's output to ``path`` (and, with ``echo``, to stderr as ``  | line``)."""

    def __init__(self, path: Path, echo: bool):
        self.path = Path(path)
        self.echo = echo
        self.stats = OutputStats(file=self.path.name)
        self._file = None
        self._head_left = HEAD_BYTES
        self._tail: collections.deque[tuple[str, int]] = collections.deque()
        self._tail_bytes = 0
        self._open()

    def run(self, fd: int) -> None:
        """Read ``fd`` to EOF; returns then (or when the descriptor is closed under it)."""
        pending = b""
        cutting = False  # inside a line already cut at MAX_LINE: skip to its newline
        while True:
            try:
                block = os.read(fd, READ_BLOCK)
            except OSError:
                break  # closed by the session after its drain deadline
            if not block:
                break
            self.stats.bytes_read += len(block)
            pending += block
            while True:
                newline = pending.find(b"\n")
                if newline < 0:
                    if len(pending) > MAX_LINE:
                        if not cutting:
                            self._line(pending[:MAX_LINE], cut=True)
                        cutting, pending = True, b""
                    break
                line, pending = pending[:newline + 1], pending[newline + 1:]
                if cutting:
                    cutting = False
                    continue
                if len(line) > MAX_LINE:
                    self._line(line[:MAX_LINE], cut=True)
                else:
                    self._line(line, cut=False)
        if pending and not cutting:
            self._line(pending, cut=False)
        self.close()

    def close(self) -> None:
        if self._file is None:
            return
        if self.stats.dropped_bytes:
            self._write(f"[lab: {self.stats.dropped_bytes:,} bytes of output dropped here: "
                        f"output.txt keeps the first {HEAD_BYTES >> 20} MiB and the last "
                        f"{TAIL_BYTES >> 20} MiB]\n")
        for text, _size in self._tail:
            self._write(text)
        self._tail.clear()
        try:
            self._file.close()
        except OSError as exc:
            self._fail(exc)
        self._file = None

    # -- one line -----------------------------------------------------------------------------

    def _line(self, raw: bytes, cut: bool) -> None:
        text = redact.text(raw.decode(errors="replace"))
        if cut:
            self.stats.lines_cut += 1
            text = text.rstrip("\n") + f" [lab: line cut at {MAX_LINE:,} bytes]\n"
        elif not text.endswith("\n"):
            text += "\n"
        size = len(raw)
        if self._head_left > 0:
            self._head_left -= size
            self._write(text)
            if self.echo:
                sys.stderr.write(f"  | {text}")
                sys.stderr.flush()
                if self._head_left <= 0:
                    sys.stderr.write(f"  | [lab: more output than {HEAD_BYTES >> 20} MiB: the "
                                     "rest is not echoed; output.txt keeps its tail]\n")
            return
        self._tail.append((text, size))
        self._tail_bytes += size
        while self._tail_bytes > TAIL_BYTES and len(self._tail) > 1:
            _text, dropped = self._tail.popleft()
            self._tail_bytes -= dropped
            self.stats.dropped_bytes += dropped

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
            self._file = os.fdopen(fd, "w", encoding="utf-8", errors="replace")
        except OSError as exc:
            self._fail(exc)

    def _write(self, text: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(text)
            self._file.flush()  # an interrupted run keeps what was printed
            self.stats.bytes_written += len(text)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.stats.error = f"{self.path.name} not written further: {exc.strerror or exc}"
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None
