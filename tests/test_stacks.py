"""Python stacks without the debug package: py-spy (live) and pystack (a core), parsed offline,
bounded on real processes, and compared with gdb's py-bt where both exist."""

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time

import pytest

from conftest import DATA, PROGRAMS, SHORT_TIMEOUT, proc_status
from lab.evidence import DebuggerInfo, DebugThread, PythonFrame
from lab.stacks import agree, pyspy, pystack

LINUX = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
NEEDS_PY_SPY = pytest.mark.skipif(pyspy.find() is None, reason="py-spy is not installed")

# -- offline: recorded output -----------------------------------------------------------------


def test_a_py_spy_dump_becomes_threads_with_python_and_native_frames():
    # GIVEN `py-spy dump --json --native` of a child deadlocked in lock.acquire()
    text = (DATA / "pyspy-lock-child-native-x86_64.json").read_text()
    # WHEN it is parsed
    (thread,) = pyspy.parse(text)
    # THEN the Python frames are apart from the native ones, most recent call first
    assert thread["name"] == "MainThread" and thread["tid"] == 22742
    assert [(f["function"], f["line"]) for f in thread["python_frames"]] == [
        ("main", 29), ("<module>", 37)]
    assert {"function": "PyThread_acquire_lock_timed",
            "library": "libpython3.11.so.1.0"} in thread["native_frames"]


def test_a_non_blocking_dump_of_the_parent_names_every_python_thread():
    threads = pyspy.parse((DATA / "pyspy-lock-parent-x86_64.json").read_text())
    names = {t["name"]: t for t in threads}
    assert set(names) == {"MainThread", "holder"}
    assert names["holder"]["python_frames"][0]["function"] == "Condition.wait"
    assert all("native_frames" not in t for t in threads)


def test_pystack_core_output_becomes_threads_most_recent_call_first():
    (thread,) = pystack.parse((DATA / "pystack-core-lock-x86_64.txt").read_text())
    assert thread["tid"] == 22742 and thread["name"] == "python"
    assert [(f["function"], f["line"]) for f in thread["python_frames"]] == [
        ("main", 29), ("<module>", 37)]


def _info(frames):
    return DebuggerInfo(name="gdb", threads=[DebugThread(tid=7, python_frames=frames)])


def _spied(frames):
    return {"source": "py-spy", "threads": [{"tid": 7, "python_frames": frames}]}


BUILTIN = PythonFrame(file="<built-in>", line=None, function="acquire")
PYBT_TOP = PythonFrame(file="/app/rust.py", line=582, function="_query")


@pytest.mark.parametrize("debugger, spied, agreed, source", [
    ([BUILTIN, PYBT_TOP], [{"file": "/app/rust.py", "line": 582,
                            "function": "RustBindingsAPI._query"}], True, "gdb py-bt"),
    ([PYBT_TOP], [{"file": "/app/rust.py", "line": 583, "function": "_query"}], False,
     "gdb py-bt"),
    ([], [{"file": "/app/rust.py", "line": 582, "function": "_query"}], None, "py-spy"),
], ids=["same frame (qualified name, built-in skipped)", "different line: disagree",
        "no py-bt: filled from py-spy"])
def test_two_sources_of_one_stack_are_compared_never_hidden(debugger, spied, agreed, source):
    # GIVEN a thread's Python frames from gdb's py-bt and from py-spy
    info, stacks = _info(list(debugger)), _spied(spied)
    # WHEN they are reconciled
    compared = agree.reconcile(info, stacks)
    # THEN the innermost frames are compared, a disagreement is written down with a note,
    # and the thread says where its Python frames came from
    thread = info.threads[0]
    assert thread.python_source == source
    if agreed is None:
        assert compared == [] and thread.python_frames[0].line == 582
    else:
        assert compared[0]["agree"] is agreed and stacks["agreement"] == compared
        assert ("note" in compared[0]) is (not agreed)


# -- live: bounded, and the target left as found ----------------------------------------------

HUNG_PY_SPY = """#!{python}
# A stand-in for py-spy that attaches with ptrace, as a blocking dump does, then hangs there
# (benfred/py-spy#732: py-spy hangs when the target exits while it is paused).
import ctypes, os, sys, time
if "--version" in sys.argv:
    print("py-spy 0.0.0-stand-in")
    sys.exit(0)
pid = int(sys.argv[sys.argv.index("--pid") + 1])
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(ctypes.c_long(16), ctypes.c_int(pid), None, None) != 0:  # PTRACE_ATTACH
    sys.exit("attach failed: " + os.strerror(ctypes.get_errno()))
os.waitpid(pid, 0)
time.sleep(3600)
"""


def _sleeper(reaper):
    target = reaper.popen([sys.executable, "-c", "import sys; print('ready', flush=True); "
                           "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)
    assert target.stdout.readline() == "ready\n"
    return target


@LINUX
def test_a_py_spy_that_hangs_is_killed_and_the_target_released(reaper, tmp_path, monkeypatch):
    # GIVEN a py-spy that stops the target and never returns
    fake = tmp_path / "py-spy"
    fake.write_text(HUNG_PY_SPY.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(pyspy.EXECUTABLE_ENV, str(fake))
    target = _sleeper(reaper)
    # WHEN a blocking dump is asked for, with a deadline
    began = time.monotonic()
    record = pyspy.dump(target.pid, blocking=True, timeout=1.0)
    # THEN it ends at the deadline, says so, and the target runs again, untraced
    assert record["reason"] == "timeout" and "did not finish within 1 s" in record["error"]
    assert time.monotonic() - began < 1.0 + pyspy.EXIT_TIMEOUT_S
    status = proc_status(target.pid)
    assert status["State"][0] not in "TtZ" and status["TracerPid"] == "0"


@LINUX
@NEEDS_PY_SPY
def test_a_target_that_exits_mid_dump_ends_the_dump_cleanly(reaper):
    # GIVEN a target with 100 threads 200 frames deep (a blocking dump takes a while)
    target = reaper.popen([sys.executable, str(PROGRAMS / "deep_threads.py"), "100", "200"],
                          stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline() == "ready\n"
    record = {}
    dumper = threading.Thread(target=lambda: record.update(
        pyspy.dump(target.pid, blocking=True, timeout=SHORT_TIMEOUT)))
    dumper.start()
    # WHEN it is killed as soon as py-spy has attached (its tracer appears: the handshake)
    end = time.monotonic() + SHORT_TIMEOUT
    while (proc_status(target.pid) or {}).get("TracerPid", "0") == "0":
        assert time.monotonic() < end and dumper.is_alive(), "py-spy never attached"
    target.kill()
    dumper.join(SHORT_TIMEOUT)
    target.wait(timeout=SHORT_TIMEOUT)
    # THEN the dump ended by itself, well before its deadline: either with what it had read
    # before the exit, or with an error that names the exit
    assert not dumper.is_alive() and record["reason"] != "timeout", record
    assert (record["error"] is None and len(record["threads"]) == 101) or (
        record["reason"] == "gone" and "exited during the dump" in record["error"]), record


@LINUX
@NEEDS_PY_SPY
def test_a_non_blocking_dump_of_a_process_that_is_not_python_says_so(reaper):
    sleeper = reaper.popen(["sleep", "600"])
    record = pyspy.dump(sleeper.pid)
    assert record["reason"] == "not-python" and record["threads"] == []
    assert record["mode"] == "nonblocking" and record["paused_s"] == 0.0


def test_no_py_spy_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setenv(pyspy.EXECUTABLE_ENV, "/nonexistent/py-spy")
    record = pyspy.dump(os.getpid())
    assert record["reason"] == "missing" and "pip install py-spy" in record["error"]


# -- under `lab run`: py-spy beside gdb, pystack on the core ---------------------------------


@LINUX
@NEEDS_PY_SPY
@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_a_run_records_py_spy_beside_py_bt_and_pystack_on_the_core(reaper, tmp_path):
    # GIVEN a deadlocked child under `lab run`, captured with gdb and written as a core
    result = reaper.lab("run", "python-lock-held", "--debugger", "gdb", "--gcore", "--json",
                        "--quiet", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    evidence = json.loads(result.stdout)
    sources = {s["source"]: s for s in evidence["python_stacks"]}
    # THEN py-spy read it without pausing it, and agrees with py-bt on the innermost frame
    spied = sources["py-spy"]
    assert spied["mode"] == "nonblocking" and spied["agreement"]
    assert all(entry["agree"] for entry in spied["agreement"])
    assert {t["python_source"] for t in evidence["debugger"]["threads"]} == {"gdb py-bt"}
    # AND the core's Python stacks come from pystack where it is installed, else why not
    core = sources["pystack"]
    if pystack.why_not():
        assert core["skipped"] == pystack.why_not()
    else:
        assert core["error"] is None and core["file"] == evidence["core"]["file"]
        top = core["threads"][0]["python_frames"][0]
        assert top == spied["threads"][0]["python_frames"][0]
        assert evidence["core"]["python_stacks"] == "pystack: 1 thread(s)"
