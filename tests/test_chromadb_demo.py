"""The foundation, for real: ChromaDB's fork deadlock reproduced, proven, caught with GDB."""

import json
import shutil
import sys

import pytest

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the Linux futex deadlock"),
    pytest.mark.skipif(not shutil.which("gdb"), reason="gdb is not installed"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One real `lab run chromadb-tokio --debugger gdb --json` shared by the tests below."""
    from conftest import Reaper

    reaper = Reaper()
    out = tmp_path_factory.mktemp("evidence")
    try:
        result = reaper.lab("run", "chromadb-tokio", "--launcher", "fork", "--debugger", "gdb",
                            "--json", "--out", str(out))
    finally:
        reaper.cleanup()
    return result, json.loads(result.stdout)


def test_run_exits_0_because_the_deadlock_was_expected(demo):
    result, evidence = demo
    assert result.returncode == 0, result.stderr
    assert evidence["schema"] == "lab-evidence/1"
    assert (evidence["scenario"], evidence["launcher"]) == ("chromadb-tokio", "fork")
    assert evidence["expected"] == evidence["verdict"] == "deadlock"


def test_deadlock_is_proven_from_proc_in_the_child(demo):
    _, evidence = demo
    [dead] = [p for p in evidence["processes"] if p["verdict"] == "deadlock"]
    assert dead["ppid"] == evidence["parent"]["pid"]
    for thread in dead["threads"]:
        futex = thread["syscall"]["futex"]
        assert thread["syscall"]["name"] == "futex" and futex["timeout"] is None
        assert futex["op"].startswith("FUTEX_WAIT")


def test_parent_threads_the_child_lost_are_named_with_their_library(demo):
    _, evidence = demo
    lost = evidence["parent"]["threads_at_fork"]
    names = {t["name"] for t in lost}
    assert {"tokio-rt-worker", "sqlx-sqlite-wor"} <= names
    tokio = next(t for t in lost if t["name"] == "tokio-rt-worker")
    assert "chromadb_rust_bindings" in tokio["library"]
    assert evidence["parent"]["forking_tid"] not in {t["tid"] for t in lost}


def test_gdb_evidence_has_rust_frames_python_frames_and_registers(demo):
    _, evidence = demo
    debugger = evidence["debugger"]
    assert debugger["name"] == "gdb" and debugger["error"] is None
    [thread] = debugger["threads"]
    assert any("chromadb_rust_bindings" in (f["library"] or "") for f in thread["frames"])
    python = [(f["file"].rsplit("/", 1)[-1], f["function"]) for f in thread["python_frames"]]
    assert ("rust.py", "_query") in python and ("chromadb_tokio.py", "child") in python
    assert debugger["registers"]["rsi" if "rsi" in debugger["registers"] else "x1"] == "0x89"
    assert debugger["instruction"] in ("syscall", "svc #0", "svc\t#0")


def test_evidence_files_are_written(demo):
    from pathlib import Path

    _, evidence = demo
    folder = Path(evidence["evidence_dir"])
    on_disk = json.loads((folder / "evidence.json").read_text())
    assert on_disk["verdict"] == "deadlock" and on_disk["complete"] is True
    assert "chromadb_rust_bindings" in (folder / "gdb.txt").read_text()
    summary = (folder / "summary.md").read_text()
    assert "FUTEX_WAIT" in summary and "tokio-rt-worker" in summary


def test_measured_times(demo, measure):
    _, evidence = demo
    timings = evidence["timings"]
    measure("chromadb-tokio: fork -> proven deadlock", timings["fork_to_verdict_s"])
    measure("chromadb-tokio: child blocked -> proven deadlock", timings["blocked_to_verdict_s"])
    measure("chromadb-tokio: fork -> finished GDB evidence", timings["fork_to_evidence_s"])
    assert timings["fork_to_verdict_s"] < timings["fork_to_evidence_s"]
