"""Run a bench program in its own session; read its JSON lines; kill and reap its whole tree.

A program started here gets a private pipe (its number in ``LAB_BENCH_FD``) for results, so
that whatever the scenario prints on stdout cannot be mistaken for one. Its stdout and stderr
go to a log file whose tail explains a failure.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab.bench.context import BenchFailed
from lab.linux import procfs

FD_ENV = "LAB_BENCH_FD"
KILL_DEADLINE_S = 10.0
REAP_POLL_S = 0.01  # polling a state (the group is gone) under a deadline
LOG_TAIL_CHARS = 600


class ProbeFailed(BenchFailed):
    """A bench program failed, printed no result in time, or printed something unreadable."""


def emit(record: dict) -> None:
    """In a bench program: send one result line to the bench (stdout when run by hand)."""
    line = json.dumps(record).encode() + b"\n"
    fd = int(os.environ.get(FD_ENV, "1"))
    os.write(fd, line)


class Probe:
    """``python -m MODULE ARGS`` in a new session; a context manager that always reaps it."""

    def __init__(self, module: str, args: list[str], log: Path, *, stdin_pipe: bool = False,
                 env: dict[str, str] | None = None):
        read_end, write_end = os.pipe()
        self.log = Path(log)
        self._buffer = b""
        self._read = read_end
        with open(self.log, "wb") as sink:
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", module, *args],
                    env={**(env or os.environ), FD_ENV: str(write_end)},
                    cwd=str(Path(__file__).resolve().parents[2]),
                    stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                    stdout=sink, stderr=subprocess.STDOUT, pass_fds=(write_end,),
                    start_new_session=True,
                )
            except BaseException:
                os.close(read_end)
                raise
            finally:
                os.close(write_end)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def read(self, timeout: float) -> dict:
        """Return the next result line; raises ProbeFailed at EOF or after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeFailed(f"{self._name()} printed no result within {timeout:g} s"
                                  f"{self.tail()}")
            ready, _, _ = select.select([self._read], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._read, 65536)
            if not chunk:
                self.proc.wait(timeout=KILL_DEADLINE_S)
                raise ProbeFailed(f"{self._name()} exited with {self.proc.returncode} before "
                                  f"its result{self.tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise ProbeFailed(f"{self._name()} printed {line[:80]!r}, not JSON") from None

    def release(self, timeout: float) -> int:
        """Close its stdin (the "you may go" handshake) and wait for it; return its status."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProbeFailed(f"{self._name()} did not exit within {timeout:g} s of its "
                              "release") from None

    def close(self) -> None:
        """SIGCONT, then SIGKILL, its whole session; reap it; close the pipe."""
        group = self.proc.pid
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                break
        try:
            self.proc.wait(timeout=KILL_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pass
        _wait_group_gone(group, KILL_DEADLINE_S)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        if self._read is not None:
            os.close(self._read)
            self._read = None

    def tail(self) -> str:
        try:
            text = self.log.read_text(errors="replace").strip()
        except OSError:
            return ""
        return f"; its log ends: {text[-LOG_TAIL_CHARS:]!r}" if text else ""

    def _name(self) -> str:
        return " ".join(self.proc.args[2:4])


def _wait_group_gone(group: int, limit: float) -> None:
    """Wait until no process of ``group`` is left, reaping those re-parented to us."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        _reap_group(group)
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(REAP_POLL_S)


def _reap_group(group: int) -> None:
    # After a Watch this process is a child subreaper: a killed probe's orphans come back
    # here as zombies, and a zombie still counts as a member of its process group.
    try:
        kids = procfs.children(os.getpid())
    except procfs.Gone:
        return
    for pid in kids:
        try:
            if os.getpgid(pid) == group:
                os.waitpid(pid, os.WNOHANG)
        except (ProcessLookupError, ChildProcessError):
            continue
