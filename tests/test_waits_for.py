"""What a stuck process waits for, and who could end it (processes[].waits_for), and the
deadlock across processes it proves (wait_for_cycle): real programs, checked against /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import PROGRAMS, SHORT_TIMEOUT, wait_until

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def blocked_in(pid: int, names: tuple[str, ...]) -> bool:
    """True while ``pid``'s main thread sleeps in one of the system calls ``names``."""
    from lab.linux import syscalls

    try:
        with open(f"/proc/{pid}/syscall") as handle:
            call = syscalls.parse_proc_syscall(handle.read().strip())
    except OSError:
        return False
    return call is not None and call.name in names


def inspect(reaper, tmp_path, pid):
    result = reaper.lab("inspect", str(pid), "--debugger", "none", "--out", str(tmp_path),
                        timeout=SHORT_TIMEOUT * 4)
    (folder,) = tmp_path.iterdir()
    return result, json.loads((folder / "evidence.json").read_text())


def record(evidence, pid):
    return next(r for r in evidence["processes"] if r["pid"] == pid)


READ, WAIT4 = ("read",), ("wait4", "waitid")


@linux
def test_two_processes_reading_each_others_pipe_are_a_proven_deadlock(reaper, tmp_path):
    # GIVEN parent and child each blocked reading the pipe the other should write
    parent = reaper.popen([sys.executable, str(PROGRAMS / "pipe_cycle.py")],
                          stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    wait_until(lambda: blocked_in(child, READ) and blocked_in(parent.pid, READ),
               "both block in read(2)")
    # WHEN the parent is inspected
    result, evidence = inspect(reaper, tmp_path, parent.pid)
    # THEN both are deadlocked, the cycle's edges name the pipes, as /proc shows them
    assert result.returncode == 12, result.stderr
    cycle = evidence["wait_for_cycle"]
    assert cycle["members"] == sorted([parent.pid, child])
    for pid, other in ((parent.pid, child), (child, parent.pid)):
        (wait,) = record(evidence, pid)["waits_for"]
        assert wait["kind"] == "pipe-read" and wait["ended_by"] == [other]
        inode = os.readlink(f"/proc/{pid}/fd/{wait['object']['fd']}")
        assert inode == f"pipe:[{wait['object']['inode']}]"
        assert record(evidence, pid)["verdict"] == "deadlock"
    assert "wait-for cycle: PID" in result.stderr


@linux
def test_a_parent_waiting_for_a_child_that_reads_its_pipe_is_a_cycle(reaper, tmp_path):
    parent = reaper.popen([sys.executable, str(PROGRAMS / "pipe_wait.py")])
    child = wait_until(lambda: _child_of(parent.pid), "the child exists")
    wait_until(lambda: blocked_in(child, READ) and blocked_in(parent.pid, WAIT4),
               "the child reads, the parent waits")
    result, evidence = inspect(reaper, tmp_path, parent.pid)
    assert result.returncode == 12, result.stderr
    (wait,) = record(evidence, parent.pid)["waits_for"]
    assert wait == {**wait, "kind": "child-exit", "ended_by": [child]}
    edges = {(e["from"], e["to"]): e["reason"] for e in evidence["wait_for_cycle"]["edges"]}
    assert edges[(parent.pid, child)] == f"PID {parent.pid} waits for PID {child} to exit"
    assert edges[(child, parent.pid)].startswith(f"PID {child} reads pipe ")


@linux
def test_a_reader_whose_writer_could_still_write_is_no_deadlock(reaper, tmp_path):
    # GIVEN a child reading a pipe whose writer, a sibling, sleeps in a loop
    parent = reaper.popen([sys.executable, str(PROGRAMS / "pipe_writer_sleeps.py")],
                          stdout=subprocess.PIPE, text=True)
    reader, writer = map(int, parent.stdout.readline().split())
    wait_until(lambda: blocked_in(reader, READ), "the reader blocks")
    result, evidence = inspect(reaper, tmp_path, parent.pid)
    # THEN who could end the read is named (the writer), and nothing is called a deadlock
    (wait,) = record(evidence, reader)["waits_for"]
    assert wait["kind"] == "pipe-read" and wait["ended_by"] == [writer]
    assert evidence["wait_for_cycle"] is None
    assert all(r["verdict"] != "deadlock" for r in evidence["processes"])
    assert any(w["kind"] == "sleep" and w["timeout"] for w in record(evidence, writer)["waits_for"])


def _child_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            found = handle.read().split()
    except OSError:
        return None
    return int(found[0]) if found else None
