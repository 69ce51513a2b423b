"""Attach gdb over MI (pygdbmi) to a live process and return its stacks as a DebuggerInfo."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pygdbmi.gdbcontroller import GdbController

from lab import interrupts, process as processes
from lab.debuggers import preflight
from lab.debuggers.pyext import find_python_gdb_extension
from lab.errors import (
    DebuggerFailed,
    LabError,
    OutputNotWritable,
    TargetExited,
)
from lab.evidence import DebuggerInfo
from lab.parsers.gdb_mi import (
    NOTE_PREFIX,
    Exchange,
    build_debugger_info,
    console_command,
    frames_from_stack,
    threads_from_info,
)
from lab.parsers.mi_records import is_prompt, parse_record

# User init files are always skipped (--nx): a ~/.gdbinit must not change what we record.
GDB_COMMAND = ["gdb", "--nx", "--quiet", "--interpreter=mi3"]
GDB_REMEDY = "install gdb: apt-get install gdb"
TRANSCRIPT_NAME = "gdb.txt"

GDB_COMMAND_TIMEOUT_S = 20.0  # one MI command, a py-bt of a deep stack included
GDB_ATTACH_TIMEOUT_S = 60.0  # -target-attach reads the symbols of every mapped library
GDB_STOP_TIMEOUT_S = 10.0  # the *stopped record that follows a successful attach
GDB_CAPTURE_TIMEOUT_S = 120.0  # the whole capture: the default of capture(timeout=)
GDB_EXIT_TIMEOUT_S = 5.0  # each shutdown step: -target-detach, -gdb-exit, SIGTERM, SIGKILL
READ_SLICE_S = 0.1  # longest single wait for output: how soon a dead gdb is noticed
# pygdbmi keeps reading for this long after output arrives (default 0.2 s per read).
SETTLE_S = 0.005
MAX_FRAMES = 256  # per thread; deeper stacks are cut (the innermost frames matter)
MAX_SYMBOL_LOOKUPS = 4096  # distinct pcs resolved with `info symbol`

SETUP_COMMANDS = (
    "-gdb-set pagination off",
    "-gdb-set confirm off",
    # Only the CPython extension we locate ourselves is sourced, never scripts the target
    # ships; this also silences the "auto-loading has been declined" warnings.
    "-gdb-set auto-load python-scripts off",
    # No network lookups and no y/n question on a pipe (gdb >= 12; an ^error on older ones).
    "-gdb-set debuginfod enabled off",
)
# A thread blocked in a syscall has its pc just after the instruction that entered the kernel.
SYSCALL_INSTRUCTION_BYTES = {"x86_64": 2, "amd64": 2, "aarch64": 4, "arm64": 4}

Progress = Callable[[str], None]


def capture(
    pid: int,
    out_dir: Path,
    *,
    timeout: float = GDB_CAPTURE_TIMEOUT_S,
    progress: Progress | None = None,
) -> DebuggerInfo:
    """Attach gdb to ``pid``, record threads, frames, Python frames and registers, detach.

    Every byte gdb prints and every command sent go to ``out_dir/gdb.txt`` as they happen.
    The target is left running and untraced. Returns the DebuggerInfo; raises DebuggerMissing
    (no gdb), TargetExited, PtraceRefused, BadInput (``pid`` is this process), DebuggerFailed
    (gdb failed, or did not answer within ``timeout`` seconds in all or GDB_COMMAND_TIMEOUT_S
    for one command), OutputNotWritable (``out_dir``).
    """
    started = time.monotonic()
    report = progress or (lambda _message: None)
    gdb_path = preflight.find(GDB_COMMAND[0], GDB_REMEDY)
    was_stopped = preflight.check_target(pid)

    transcript = _Transcript(Path(out_dir) / TRANSCRIPT_NAME)
    notes = {"pid": str(pid)}
    transcript.note("pid", notes["pid"])
    gdb: _Gdb | None = None
    try:
        report("gdb: starting")
        with interrupts.deferred():  # _shutdown() must know the gdb it started
            gdb = _Gdb(gdb_path, pid, transcript, deadline=started + timeout)
        _drive(gdb, pid, notes, report)
    except LabError as error:
        notes["error"] = str(error)
        raise
    finally:
        report("gdb: detaching")
        problem = _shutdown(gdb, pid, was_stopped)
        if problem:
            notes.setdefault("error", problem)
        notes["seconds"] = f"{time.monotonic() - started:.3f}"
        for key in ("message", "error", "seconds"):
            if key in notes:
                transcript.note(key, notes[key])
        transcript.close()
    if problem:
        raise DebuggerFailed(problem)
    assert gdb is not None
    info = build_debugger_info(gdb.exchanges, notes)
    info.transcript = TRANSCRIPT_NAME
    return info


def _drive(gdb: _Gdb, pid: int, notes: dict[str, str], report: Progress) -> None:
    """The command sequence: probe, set up, attach, then per thread: select, stack, py-bt."""
    gdb.send("-gdb-version")
    for command in SETUP_COMMANDS:
        gdb.send(command)  # an older gdb's ^error here is recorded and harmless

    report(f"gdb: attaching to process {pid}")
    attach = gdb.send(f"-target-attach {pid}", timeout=GDB_ATTACH_TIMEOUT_S)
    if attach.error:
        raise _attach_error(pid, attach.error)
    gdb.attached = True
    gdb.wait_for_stop(GDB_STOP_TIMEOUT_S)

    extension = find_python_gdb_extension(pid)
    python = False
    if extension is None:
        notes["message"] = "no CPython gdb extension (pythonX.Y-gdb.py) found: no Python frames"
    else:
        loaded = gdb.send(console_command(f"source {extension}"))
        python = loaded.ok
        notes["message"] = (
            f"Python frames from {extension}"
            if python
            else f"could not load {extension}: {loaded.error}"
        )

    listing = gdb.send("-thread-info")
    if listing.error:
        raise DebuggerFailed(f"gdb could not list the threads of process {pid}: {listing.error}")
    threads = threads_from_info(listing.payload)
    # Registers and the instruction come from the main thread (tid == pid), else gdb's first.
    first = next((t for t in threads if t.tid == pid), threads[0] if threads else None)
    back = SYSCALL_INSTRUCTION_BYTES.get(platform.machine())
    pcs: dict[str, None] = {}
    for number, thread in enumerate(threads, 1):
        report(f"gdb: thread {number}/{len(threads)} (tid {thread.tid})")
        if gdb.send(f"-thread-select {thread.gdb_id}").error:
            continue
        if thread is first:
            gdb.send("-data-list-register-names")
            gdb.send("-data-list-register-values x")
            gdb.send("-data-disassemble -s $pc -e $pc+1 -- 0")
            if back:
                gdb.send(f"-data-disassemble -s $pc-{back} -e $pc-{back - 1} -- 0")
        stack = gdb.send(f"-stack-list-frames 0 {MAX_FRAMES - 1}")
        for frame in frames_from_stack(stack.payload):
            if frame.pc:
                pcs.setdefault(frame.pc)
        if python:
            gdb.send(console_command("py-bt"))

    report(f"gdb: resolving {min(len(pcs), MAX_SYMBOL_LOOKUPS)} addresses")
    for pc in list(pcs)[:MAX_SYMBOL_LOOKUPS]:
        gdb.send(console_command(f"info symbol {pc}"))


def _attach_error(pid: int, message: str) -> LabError:
    return preflight.attach_failure("gdb", pid, message)


class _Transcript:
    """gdb.txt: raw gdb output and the commands sent, whole lines, flushed as they come."""

    def __init__(self, path: Path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # 0600: a transcript shows memory (strings, registers) of the target
            self._file = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                                   "wb")
        except OSError as error:
            raise OutputNotWritable(f"cannot write {path}: {error.strerror}") from None
        # Partial lines wait here so a command line never lands inside an output line.
        self._partial = {"stdout": b"", "stderr": b""}

    def output(self, raw: bytes | None, stream: str) -> None:
        if not raw:
            return
        data = self._partial.get(stream, b"") + raw
        cut = data.rfind(b"\n") + 1
        self._partial[stream] = data[cut:]
        if cut:
            self._write(data[:cut])

    def command(self, line: str) -> None:
        self._write(line.encode() + b"\n")

    def note(self, key: str, value: str) -> None:
        self._write(f"{NOTE_PREFIX}{key}: {' '.join(str(value).split())}\n".encode())

    def close(self) -> None:
        for stream, rest in self._partial.items():
            if rest:
                self._write(rest + b"\n")
                self._partial[stream] = b""
        try:
            os.fsync(self._file.fileno())
        except OSError:
            pass
        self._file.close()

    def _write(self, data: bytes) -> None:
        if not self._file.closed:
            self._file.write(data)
            self._file.flush()


class _Records:
    """GDB's raw output, in the chunks it arrives in, to MI records (pygdbmi's dicts)."""

    def __init__(self):
        self._partial: dict[str, list[bytes]] = {}

    def __call__(self, raw: bytes, stream: str) -> list[dict[str, Any]]:
        parts = self._partial.setdefault(stream, [])
        *complete, rest = raw.split(b"\n")
        if not complete:
            parts.append(rest)  # joined once the line ends: linear, however many chunks
            return []
        lines = [b"".join([*parts, complete[0]]), *complete[1:]]
        self._partial[stream] = [rest] if rest else []
        records = []
        for line in lines:
            text = line.decode(errors="replace").rstrip("\r")
            if text and not is_prompt(text):
                records.append({**parse_record(text), "stream": stream})
        return records


class _Gdb:
    """One gdb process: send MI commands with tokens, read until each one's result arrives."""

    def __init__(self, gdb_path: str, pid: int, transcript: _Transcript, deadline: float):
        self.pid = pid
        self.transcript = transcript
        self.deadline = deadline
        self.timeout_total = max(0.0, deadline - time.monotonic())
        self.exchanges: list[Exchange] = [Exchange(token=None, command="")]
        self.token = 0
        self.attached = False
        self.responsive = True
        try:
            self.controller = GdbController(
                command=[gdb_path, *GDB_COMMAND[1:]],
                time_to_check_for_additional_output_sec=SETTLE_S,
            )
        except (OSError, ValueError) as error:
            raise DebuggerFailed(f"could not start {gdb_path}: {error}") from None
        io = self.controller.io_manager
        # pygdbmi never selects on stderr; read it too, or a chatty gdb blocks on a full pipe.
        if io.stderr_fileno >= 0 and io.stderr_fileno not in io.read_list:
            io.read_list.append(io.stderr_fileno)
        parse = _Records()

        def tee(raw_output: bytes, stream: str) -> list[dict[str, Any]]:
            transcript.output(raw_output, stream)
            return parse(raw_output, stream)

        # Every raw byte passes here: teed to the transcript, then read by the lab's linear MI
        # parser (pygdbmi's is quadratic on a long string: a target's huge value would stall).
        io._get_responses_list = tee

    @property
    def process(self) -> subprocess.Popen:
        assert self.controller.gdb_process is not None
        return self.controller.gdb_process

    def send(
        self, command: str, timeout: float = GDB_COMMAND_TIMEOUT_S, *, cleanup: bool = False
    ) -> Exchange:
        """Send ``command`` and return its exchange once its result record has arrived.

        ``^error`` results are returned (check ``.error``); no answer in time raises
        DebuggerFailed. A cleanup command is not bounded by the capture deadline.
        """
        self.token += 1
        exchange = Exchange(token=self.token, command=command)
        self.exchanges.append(exchange)
        line = f"{self.token}{command}"
        self.transcript.command(line)
        limit = timeout if cleanup else min(timeout, self.deadline - time.monotonic())
        try:
            self.controller.write(line, timeout_sec=max(limit, 0), read_response=False)
        except OSError:
            self.responsive = False
            raise self._gone(command) from None
        if not self._read_until(exchange, lambda: exchange.result is not None, limit):
            self.responsive = False
            if self.process.poll() is not None:
                raise self._gone(command)
            capture_bound = not cleanup and limit < timeout
            why = f" (capture timeout {self.timeout_total:.1f} s)" if capture_bound else ""
            raise DebuggerFailed(f"gdb did not answer `{command}` within {limit:.1f} s{why}")
        if exchange.error and not processes.alive(self.pid):
            raise TargetExited(f"process {self.pid} exited during `{command}`",
                               preflight.TARGET_REMEDY)
        return exchange

    def wait_for_stop(self, timeout: float) -> bool:
        """Read until a ``*stopped`` record (it may follow the attach's ^done); False if none."""

        def stopped() -> bool:
            return any(
                r.get("type") == "notify" and r.get("message") == "stopped"
                for ex in self.exchanges
                for r in ex.records
            )

        limit = min(timeout, self.deadline - time.monotonic())
        return self._read_until(self.exchanges[-1], stopped, limit)

    def _read_until(self, exchange: Exchange, done: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + max(timeout, 0)
        while not done():
            left = end - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                self._drain(exchange)
                return done()
            exchange.records.extend(
                self.controller.get_gdb_response(
                    timeout_sec=min(READ_SLICE_S, left), raise_error_on_timeout=False
                )
            )
        return True

    def _drain(self, exchange: Exchange) -> None:
        try:
            exchange.records.extend(
                self.controller.get_gdb_response(timeout_sec=0, raise_error_on_timeout=False)
            )
        except (OSError, ValueError):
            pass

    def _gone(self, command: str) -> LabError:
        if not processes.alive(self.pid):
            return TargetExited(f"process {self.pid} exited during `{command}`",
                                preflight.TARGET_REMEDY)
        try:  # its pipe broke: it is ending, but may not have been reaped yet
            code = self.process.wait(timeout=GDB_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        return DebuggerFailed(f"gdb exited (status {code}) during `{command}`")

    def close(self) -> bool:
        """Detach and exit politely when gdb answers; else terminate, then kill.

        Returns True when gdb detached and exited cleanly; False when it died or had to be
        signalled while it may still have held the target (which may then need a SIGCONT).
        """
        process = self.process
        clean = False
        if self.responsive and process.poll() is None:
            try:
                detached = not self.attached
                if self.attached:
                    detached = self.send("-target-detach", GDB_EXIT_TIMEOUT_S, cleanup=True).ok
                self.send("-gdb-exit", GDB_EXIT_TIMEOUT_S, cleanup=True)
                clean = process.wait(timeout=GDB_EXIT_TIMEOUT_S) == 0 and detached
            except (LabError, subprocess.TimeoutExpired):
                pass
        processes.end_popen(process, GDB_EXIT_TIMEOUT_S)
        self._drain(self.exchanges[-1])
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        return clean


def _shutdown(gdb: _Gdb | None, pid: int, was_stopped: bool) -> str | None:
    """Make sure gdb is gone and the target runs untraced; return a problem or None."""
    if gdb is not None:
        try:
            clean = gdb.close()
        except Exception as error:  # never let cleanup hide the capture's own error
            return f"could not stop gdb: {error}"
        if gdb.process.poll() is None:
            return f"gdb (pid {gdb.process.pid}) did not exit"
        if gdb.attached and not clean and not was_stopped:
            # A tracer that dies attached can leave its tracee stopped; SIGCONT also discards
            # a SIGSTOP from the attach that is still pending (see signal(7), ptrace(2)).
            processes.send(pid, signal.SIGCONT)
    return processes.wait_released(pid, was_stopped, "gdb")
