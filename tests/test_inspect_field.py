"""`lab inspect` where users meet the hang: a Celery prefork worker stuck on a ChromaDB query,
and a multiprocessing pool run by Debian's own python3, both started outside the lab."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
from test_inspect import as_found, blocked_forever, by_pid, inspect, wait_until

from conftest import LONG_TIMEOUT, PROGRAMS, REPO, SHORT_TIMEOUT

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="reads /proc"),
              pytest.mark.slow]
DEBIAN_PYTHON = "/usr/bin/python3"


def _lines_until(stream, pattern: str) -> re.Match:
    """Read ``stream`` until a line matches ``pattern`` (the handshake); fail at EOF."""
    seen = []
    for line in stream:
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    pytest.fail(f"no line matched {pattern!r}:\n{''.join(seen)}")


@pytest.mark.skipif(importlib.util.find_spec("celery") is None
                    or importlib.util.find_spec("chromadb") is None,
                    reason="needs the celery and demo extras (celery, chromadb)")
def test_a_hung_celery_worker_is_diagnosed_and_keeps_running(reaper, tmp_path, measure):
    # GIVEN a Celery prefork worker, started outside the lab, whose task hangs on ChromaDB
    # (time limits far away: the pool child must still be there when inspected)
    env = {**os.environ, "LAB_CELERY_SOFT_S": "600", "LAB_CELERY_HARD_S": "900"}
    drive = reaper.popen([sys.executable, "-m", "lab.celery_lab.drive", "--pool", "prefork",
                          "--fix", "none", "--dir", str(tmp_path / "celery")], cwd=REPO,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = int(_lines_until(drive.stdout, r"worker (\d+) ready")[1])
    child = int(_lines_until(drive.stdout, r"task started in PID (\d+)")[1])
    wait_until(lambda: blocked_forever(child), "the pool child blocked", LONG_TIMEOUT)
    # WHEN the lab inspects the worker's main process
    result, evidence = inspect(reaper, tmp_path / "out", worker, "--debugger", "gdb")
    # THEN it finds the hung pool child among the worker's processes and proves the deadlock
    assert result.returncode == 12, result.stderr
    assert by_pid(evidence, child)["verdict"] == "deadlock"
    assert by_pid(evidence, worker)["verdict"] == "ok"
    # AND it names the Tokio and sqlx threads the child lacks (the worker's threads now)
    lacks = {t["name"] for t in evidence["parent"]["threads_at_fork"]}
    assert {"tokio-rt-worker", "sqlx-sqlite-wor"} <= lacks, lacks
    assert evidence["parent"]["pid"] == worker
    # AND the task's Python stack comes from py-spy: the task, then ChromaDB's query
    spied = next(s for s in evidence["python_stacks"] if s["pid"] == child)
    frames = [(os.path.basename(f["file"]), f["function"])
              for f in spied["threads"][0]["python_frames"]]
    assert ("tasks.py", "query") in frames
    assert frames[0] == ("rust.py", "RustBindingsAPI._query"), frames[:3]
    measure("lab inspect, Celery worker: verdict", evidence["timings"]["verdict_s"])
    measure("lab inspect, Celery worker: py-spy stacks (2 processes)",
            evidence["timings"]["python_stacks_s"])
    measure("lab inspect, Celery worker: gdb capture of the pool child (= its pause, at most)",
            evidence["timings"]["debugger_s"])
    measure("lab inspect, Celery worker: total", evidence["timings"]["total_s"])
    # AND afterwards the worker still runs, nothing stopped or traced
    assert drive.poll() is None
    assert as_found(worker) == ("S", "0") and as_found(child) == ("S", "0")


def _debian_python() -> str | None:
    """Debian's own interpreter (not a venv's, not pyenv's), or None."""
    if not os.path.exists(DEBIAN_PYTHON) or not shutil.which("dpkg"):
        return None
    owner = subprocess.run(["dpkg", "-S", os.path.realpath(DEBIAN_PYTHON)], capture_output=True,
                           text=True, timeout=SHORT_TIMEOUT, check=False)
    return DEBIAN_PYTHON if owner.returncode == 0 else None


@pytest.mark.skipif(_debian_python() is None,
                    reason="no Debian python3 here (apt-get install python3)")
@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_a_multiprocessing_pool_on_debians_python_gets_python_stacks_from_py_spy(
        reaper, tmp_path):
    # GIVEN a fork pool run by Debian's python3, whose worker deadlocked on a lock
    from lab.debuggers.pyext import find_python_gdb_extension

    main = reaper.popen([DEBIAN_PYTHON, str(PROGRAMS / "pool_lock_held.py")], cwd=REPO,
                        stdout=subprocess.PIPE, text=True)
    worker = int(_lines_until(main.stdout, r"worker (\d+)")[1])
    wait_until(lambda: blocked_forever(worker), "the pool worker blocked")
    # WHEN the lab inspects the pool's main process
    result, evidence = inspect(reaper, tmp_path, main.pid, "--debugger", "gdb")
    # THEN the worker is a proven deadlock, and the pool's threads are named
    assert result.returncode == 12, result.stderr
    assert by_pid(evidence, worker)["verdict"] == "deadlock"
    names = {t["python_name"] for t in evidence["parent"]["threads_at_fork"]}
    assert {"holder", "Thread-1 (_handle_workers)"} <= names, names
    # AND the worker's Python stack is there: from py-spy where gdb has no CPython extension
    (thread,) = evidence["debugger"]["threads"]
    top = thread["python_frames"][0]
    assert (os.path.basename(top["file"]), top["line"], top["function"]) == (
        "pool_lock_held.py", 27, "task")
    if find_python_gdb_extension(worker) is None:
        assert thread["python_source"] == "py-spy"
        assert "no CPython gdb extension" in evidence["debugger"]["message"]
    else:  # python3.X-dbg is installed: py-bt and py-spy both read it, and must agree
        assert thread["python_source"] == "gdb py-bt"
        spied = next(s for s in evidence["python_stacks"] if s["pid"] == worker)
        assert all(entry["agree"] for entry in spied["agreement"])
    assert as_found(worker) == ("S", "0") and main.poll() is None
    summary = (tmp_path / evidence["run_id"] / "summary.md").read_text()
    assert "pool_lock_held.py" in summary
