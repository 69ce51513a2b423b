"""Live catches: the breakpoint trap caught by gdb and lldb, and scripts/lldb_attach_child.py.

Each catch starts the scenario's parent, waits for its child to stop itself, attaches the
debugger, continues the child and records its stop; the autouse fixture in conftest.py fails a
test that leaves any process behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SHORT_TIMEOUT
from lab.catch import CatchOptions, catch, outcome
from lab.parsers.document import evidence_from_transcript
from lab.progress import Progress

if not sys.platform.startswith("linux"):
    pytest.skip("the catch tests need ptrace and /proc: Linux only", allow_module_level=True)

SCRIPT = REPO / "scripts" / "lldb_attach_child.py"
TRAP = {"x86_64": "int3", "aarch64": "brk #0x1"}.get(os.uname().machine)
NEEDS_CC = pytest.mark.skipif(not any(shutil.which(c) for c in ("cc", "gcc", "clang")),
                              reason="the trap scenario compiles a tiny C file: no C compiler")


def needs(tool: str):
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed")


@NEEDS_CC
@pytest.mark.parametrize("debugger", [pytest.param("gdb", marks=needs("gdb")),
                                      pytest.param("lldb", marks=needs("lldb"))],
                         ids=["debugger=gdb", "debugger=lldb"])
def test_breakpoint_trap_is_caught_at_the_trap(debugger, tmp_path, measure):
    # GIVEN the breakpoint-trap scenario, whose child executes int3 / brk #0x1
    options = CatchOptions(scenario="breakpoint-trap", debugger=debugger, out_base=tmp_path,
                           echo_output=False)
    # WHEN it is caught in the debugger
    evidence = catch(options, Progress(enabled=False))
    measure(f"catch of the breakpoint trap with {debugger} (launch to evidence)",
            evidence.stages[-1]["t_s"])
    # THEN the verdict is crash, and the debugger stopped at the trap with SIGTRAP
    assert outcome(evidence) is None
    assert evidence.verdict == "crash" and evidence.expected == "crash"
    dbg = evidence.debugger
    assert dbg.name == debugger and dbg.signal == "SIGTRAP" and dbg.error is None
    if TRAP:
        assert dbg.instruction == TRAP
    frames = dbg.threads[0].frames
    assert frames[0].function == "lab_breakpoint_trap" and len(frames) > 5
    child = next(p for p in evidence.processes if p.pid == dbg.pid)
    assert child.ppid == evidence.processes[0].pid  # the scenario's parent forked it
    assert child.signal == "SIGTRAP" and child.verdict == "crash"
    # AND the run directory holds the evidence, the summary and the transcript
    run = Path(evidence.evidence_dir)
    assert run.parent == tmp_path
    assert json.loads((run / "evidence.json").read_text())["debugger"]["name"] == debugger
    assert (run / "summary.md").is_file() and (run / "output.txt").is_file()
    # AND `lab parse` reads the transcript back to the same stop
    parsed = evidence_from_transcript(debugger, run / dbg.transcript)
    assert parsed.verdict == "crash" and parsed.debugger.threads == dbg.threads


@needs("lldb")
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("chromadb") is None,
                    reason="chromadb is not installed")
def test_script_catches_the_chromadb_deadlock_with_lldb(reaper, tmp_path, measure):
    # GIVEN scripts/lldb_attach_child.py with its defaults (chromadb-tokio, lldb)
    # WHEN it runs
    result = reaper.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--quiet"],
                        cwd=REPO, timeout=180)
    # THEN it exits 0: on Linux the child deadlocks, proven from /proc, then interrupted
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.iterdir()
    evidence = json.loads((run / "evidence.json").read_text())
    measure("scripts/lldb_attach_child.py on chromadb-tokio (launch to proven deadlock)",
            evidence["detect_s"])
    assert evidence["verdict"] == "deadlock" and evidence["complete"]
    dbg = evidence["debugger"]
    assert dbg["name"] == "lldb" and dbg["stop_reason"] == "signal SIGINT"
    libraries = {f["library"] for t in dbg["threads"] for f in t["frames"]}
    assert "chromadb_rust_bindings.abi3.so" in libraries
    assert evidence["parent"]["threads_at_fork"], "the threads the child did not inherit"
    # AND the transcript parses to the same deadlock, from the lab's /proc note
    parsed = reaper.lab("parse", "lldb", str(run / "lldb.txt"), "--json", timeout=60)
    assert parsed.returncode == 0 and json.loads(parsed.stdout)["verdict"] == "deadlock"


@needs("lldb")
def test_script_says_when_the_child_did_not_fail(reaper, tmp_path):
    # GIVEN a fixed scenario: its child takes the lock and exits 0 under lldb
    result = reaper.run([sys.executable, str(SCRIPT), "--scenario", "python-lock-reinit",
                         "--out", str(tmp_path), "--quiet"], cwd=REPO, timeout=120)
    # THEN the script exits 1 with one line saying so, and still leaves the evidence
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "did not crash or deadlock" in result.stderr
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "evidence.json").read_text())["verdict"] == "ok"


@pytest.mark.parametrize(("args", "needle"), [
    (["--scenario", "no-such-scenario"], "unknown scenario"),
    (["--debugger", "windbg"], "invalid choice"),
    (["--timeout", "soon"], "not a number"),
    (["--timeout", "-1"], "must be > 0"),
], ids=["unknown scenario", "unknown debugger", "bad number", "negative timeout"])
def test_script_bad_input_is_one_line(reaper, tmp_path, args, needle):
    result = reaper.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), *args],
                        cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and needle in result.stderr
    assert "Traceback" not in result.stderr


def read_until(proc: subprocess.Popen, needle: str, timeout: float = SHORT_TIMEOUT) -> str:
    """Read ``proc``'s stderr until a line holds ``needle`` (a handshake, with a deadline)."""
    seen = b""
    end = time.monotonic() + timeout
    while needle.encode() not in seen:
        left = end - time.monotonic()
        ready, _, _ = select.select([proc.stderr], [], [], max(left, 0))
        if not ready:
            pytest.fail(f"no {needle!r} from the script within {timeout} s: {seen[-2000:]!r}")
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            pytest.fail(f"the script ended before {needle!r}: {seen[-2000:]!r}")
        seen += chunk
    return seen.decode(errors="replace")


@needs("lldb")
def test_sigterm_during_the_attach_leaves_nothing_behind(reaper, tmp_path):
    # GIVEN the script holding a child that stopped itself, lldb about to attach
    proc = reaper.popen([sys.executable, str(SCRIPT), "--scenario", "python-lock-held",
                         "--out", str(tmp_path)], cwd=REPO, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
    read_until(proc, " hold ")
    # WHEN it receives SIGTERM
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    # THEN it exits 143 with one line, after writing the evidence so far; and the autouse
    # fixture finds no process left (child, parent, lldb)
    assert proc.returncode == 143, err
    assert err.decode().strip().splitlines()[-1] == "lab: error: interrupted by SIGTERM"
    (run,) = tmp_path.iterdir()
    evidence = json.loads((run / "evidence.json").read_text())
    assert evidence["complete"] and "interrupted" in evidence["error"]


@needs("gdb")
@pytest.mark.parametrize("scenario, verdict, words", [
    ("sqlite-wal-txn", "data-loss", "that is not in the database afterwards"),
    ("pool-silent-zero", "error", "was delivered to a Future and never re-raised"),
], ids=["report=finding", "report=exception"])
def test_reports_reach_the_evidence_through_the_catch_as_through_the_watch(
        tmp_path, scenario, verdict, words):
    from lab.options import RunOptions
    from lab.runner import run_scenario

    # GIVEN a scenario whose failure only its own report shows: a commit lost on disk (a
    # finding of the parent) or an exception a Future swallowed (an exception report)
    # WHEN it is caught in gdb, and when it is watched
    caught = catch(CatchOptions(scenario=scenario, debugger="gdb", out_base=tmp_path / "catch",
                                echo_output=False), Progress(enabled=False))
    watched = run_scenario(scenario, "fork", RunOptions(debugger="none",
                                                        out_base=tmp_path / "watch",
                                                        echo_output=False),
                           Progress(enabled=False))
    # THEN both paths fold the report into a process's detail and the run's verdict
    for evidence in (caught, watched):
        assert evidence.verdict == verdict == evidence.expected, evidence.processes
        assert any(words in record.detail for record in evidence.processes), evidence.processes
    assert caught.watch_mode == "debugger" and caught.debugger.name == "gdb"
