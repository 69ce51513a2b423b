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
from collections.abc import Iterator
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


class _Lines:
    """Split blocks into lines of at most MAX_LINE bytes (True: cut there), in one pass."""

    def __init__(self):
        self.pending = b""  # never more than MAX_LINE bytes
        self.cutting = False  # inside a line already cut: skip to its newline

    def feed(self, block: bytes) -> Iterator[tuple[bytes, bool]]:
        data = self.pending + block
        start = 0
        while (newline := data.find(b"\n", start)) >= 0:
            if self.cutting:
                self.cutting = False
            elif newline + 1 - start > MAX_LINE:
                yield data[start:start + MAX_LINE], True
            else:
                yield data[start:newline + 1], False
            start = newline + 1
        rest = data[start:]
        if self.cutting:
            rest = b""
        elif len(rest) > MAX_LINE:
            yield rest[:MAX_LINE], True
            self.cutting, rest = True, b""
        self.pending = rest

    def end(self) -> Iterator[tuple[bytes, bool]]:
        if self.pending and not self.cutting:
            yield self.pending, False
        self.pending = b""


class OutputTee:
    """Copy a process's output to ``path`` (and, with ``echo``, to stderr as ``  | line``).

    The head is split into lines, redacted and written as it comes; past HEAD_BYTES the output
    is only kept, as raw blocks, in a ring of TAIL_BYTES, split and redacted once at the end:
    a flood costs a read and a copy per block, not Python work per line.
    """

    def __init__(self, path: Path, echo: bool):
        self.path = Path(path)
        self.echo = echo
        self.stats = OutputStats(file=self.path.name)
        self._file = None
        self._head_left = HEAD_BYTES
        self._ring: collections.deque[bytes] = collections.deque()
        self._ring_bytes = 0
        self._keys = redact.KeyBlocks()  # a private key printed across lines
        self._open()

    def run(self, fd: int) -> None:
        """Read ``fd`` to EOF; returns then (or when the descriptor is closed under it)."""
        lines = _Lines()
        while True:
            try:
                block = os.read(fd, READ_BLOCK)
            except OSError:
                break  # closed by the session after its drain deadline
            if not block:
                break
            self.stats.bytes_read += len(block)
            if self._head_left <= 0:
                self._keep(block)
                continue
            for line, cut in lines.feed(block):
                self._line(line, cut)
            if self._head_left <= 0:
                self._keep(lines.pending)  # the start of the tail
                lines = _Lines()
        if self._head_left > 0:
            for line, cut in lines.end():
                self._line(line, cut)
        self.close()

    def close(self) -> None:
        if self._file is None:
            return
        tail = b"".join(self._ring)
        self._ring.clear()
        if self.stats.dropped_bytes:
            newline = tail.find(b"\n")  # the ring starts inside a line: drop its end too
            if newline >= 0:
                self.stats.dropped_bytes += newline + 1
                tail = tail[newline + 1:]
            self._write(f"[lab: {self.stats.dropped_bytes:,} bytes of output dropped here: "
                        f"output.txt keeps the first {HEAD_BYTES >> 20} MiB and the last "
                        f"{TAIL_BYTES >> 20} MiB]\n")
        rest = _Lines()
        for line, cut in (*rest.feed(tail), *rest.end()):
            self._write(self._text(line, cut))
        try:
            self._file.close()
        except OSError as exc:
            self._fail(exc)
        self._file = None

    # -- one line, or one block of the tail --------------------------------------------------

    def _text(self, raw: bytes, cut: bool) -> str:
        text = self._keys.line(redact.text(raw.decode(errors="replace")))
        if cut:
            self.stats.lines_cut += 1
            return text.rstrip("\n") + f" [lab: line cut at {MAX_LINE:,} bytes]\n"
        return text if text.endswith("\n") else text + "\n"

    def _line(self, raw: bytes, cut: bool) -> None:
        if self._head_left <= 0:
            self._keep(raw)
            return
        self._head_left -= len(raw)
        text = self._text(raw, cut)
        self._write(text)
        if self.echo:
            sys.stderr.write(f"  | {text}")
            if self._head_left <= 0:
                sys.stderr.write(f"  | [lab: more output than {HEAD_BYTES >> 20} MiB: the "
                                 "rest is not echoed; output.txt keeps its tail]\n")
            sys.stderr.flush()

    def _keep(self, block: bytes) -> None:
        if not block:
            return
        self._ring.append(block)
        self._ring_bytes += len(block)
        while len(self._ring) > 1 and self._ring_bytes - len(self._ring[0]) >= TAIL_BYTES:
            dropped = self._ring.popleft()
            self._ring_bytes -= len(dropped)
            self.stats.dropped_bytes += len(dropped)

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
