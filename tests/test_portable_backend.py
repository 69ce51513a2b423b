"""The portable (psutil) process backend: what a Mac runs, run here with LAB_BACKEND=portable.

Every test starts real processes; nothing is faked. What only a Mac or Windows can run is said
in each test's docstring (and docs/MACOS.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, PROGRAMS, REPO, SHORT_TIMEOUT, wait_until
from lab.backend import RUN_ID_VAR
from lab.envinfo import platform_info, platform_key
from lab.evidence import DebuggerInfo, DebugThread, Frame
from lab.parsers.lldb import parse_lldb_transcript
from lab.portable.backend import PortableBackend
from lab.process import Gone, exits
from lab.process.tree import ProcessTree
from lab.verdicts import Verdict
from lab.watch import stackproof

PORTABLE = {**os.environ, "LAB_BACKEND": "portable"}
CORE_SCENARIOS = ("python-lock-held", "python-lock-reinit", "breakpoint-trap", "logging-lock",
                  "native-mutex-held", "pickle-by-path")




def _evidence(result) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


# -- the backend itself, on a real process ---------------------------------------------------

def test_backend_follows_a_real_process_by_psutil(reaper):
    # GIVEN a real child that carries a run marker and blocks reading its stdin
    child = reaper.popen([sys.executable, "-c", "import sys; print('ready', flush=True); "
                          "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env={**os.environ, RUN_ID_VAR: "portable-test-run"}, text=True)
    assert child.stdout.readline() == "ready\n"
    backend = PortableBackend()
    # WHEN the backend is asked about it
    info = wait_until(lambda: (i := backend.info(child.pid)).state == "S" and i, "a sleeping child")
    # THEN it sees the tree, the marker, its threads with CPU times and no syscall, no signals
    assert info.ppid == os.getpid() and info.session == os.getsid(child.pid)
    assert child.pid in backend.children(os.getpid())
    assert backend.cmdline(child.pid)[0] == sys.executable
    assert backend.run_id(child.pid) == "portable-test-run"
    assert backend.marked("portable-test-run") == [child.pid]
    threads = backend.threads(child.pid)
    assert [t.tid for t in threads] == [child.pid]
    assert threads[0].syscall is None and isinstance(threads[0].cpu_ticks, int)
    assert backend.signals(child.pid) is None and backend.tracer(child.pid) == 0
    assert backend.mode == "portable" and not backend.sees_syscalls and backend.fileno() is None
    child.stdin.close()
    assert child.wait(timeout=SHORT_TIMEOUT) == 0
    with pytest.raises(Gone):
        backend.info(child.pid)


def test_a_real_crash_goes_through_the_one_exit_classifier():
    # GIVEN a tree on the portable backend whose root dies of SIGSEGV
    tree = ProcessTree(PortableBackend())
    tree.spawn([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
               env=dict(os.environ), cwd=None)
    try:
        # WHEN it is followed to its end
        def done():
            tree.update()
            return tree.all_finished()

        wait_until(done, "the root's end")
    finally:
        tree.stop()
    # THEN the wait status became a crash named after the signal (lab.process.exits)
    record = tree.records[0]
    assert (record.verdict, record.signal, record.exit_code) == ("crash", "SIGSEGV", -11)


# -- Windows exit statuses --------------------------------------------------------------------

# (exit status as Windows' GetExitCodeProcess gives it to Popen.returncode, the name). A POSIX
# exit status has 8 bits, so no process here can exit with these: the table feeds the classifier
# the values Windows reports; test_a_real_windows_access_violation runs a real one on Windows.
NTSTATUS_CASES = [
    (3221225477, "ACCESS_VIOLATION"),
    (0xC00000FD, "STACK_OVERFLOW"),
    (0xC0000409, "STACK_BUFFER_OVERRUN"),
    (0xC000001D, "ILLEGAL_INSTRUCTION"),
    (0xC0000094, "INTEGER_DIVIDE_BY_ZERO"),
    (-1073741819, "ACCESS_VIOLATION"),  # the same code read as a signed 32-bit number
    (0xC0000123, "NTSTATUS 0xC0000123"),  # an error status the table does not name
]


@pytest.mark.parametrize("code, name", NTSTATUS_CASES,
                         ids=[f"status={name}" for _, name in NTSTATUS_CASES])
def test_an_ntstatus_exit_is_a_crash_named_after_it(code, name):
    ending = exits.from_returncode(code)
    assert (ending.verdict, ending.signal) == (Verdict.CRASH, name)
    assert f"0x{code & 0xFFFFFFFF:08X}" in ending.detail


@pytest.mark.parametrize("code, verdict, name", [(0, "ok", None), (1, "error", None),
                                                  (255, "error", None), (-5, "crash", "SIGTRAP")],
                         ids=["status=0", "status=1", "status=255", "signal=SIGTRAP"])
def test_ordinary_exits_and_signals_are_unchanged(code, verdict, name):
    ending = exits.from_returncode(code)
    assert (ending.verdict.value, ending.signal) == (verdict, name)


def test_on_posix_an_ntstatus_cannot_arrive_through_waitpid(reaper):
    # GIVEN a real child asking to exit with ACCESS_VIOLATION's code: POSIX keeps 8 bits of it
    result = reaper.run([sys.executable, "-c", "import sys; sys.exit(0xC0000005)"])
    if sys.platform == "win32":
        pytest.skip("on Windows the whole status arrives: test_a_real_windows_access_violation")
    # THEN the lab sees exit status 5: an error, honestly, not a crash
    assert result.returncode == 5
    assert exits.from_returncode(result.returncode).verdict == Verdict.ERROR


@pytest.mark.skipif(sys.platform != "win32", reason="an NTSTATUS exit exists only on Windows")
def test_a_real_windows_access_violation(reaper):
    result = reaper.run([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"])
    ending = exits.from_returncode(result.returncode)
    assert (ending.verdict, ending.signal) == (Verdict.CRASH, "ACCESS_VIOLATION")


# -- the proof from a debugger's stacks -------------------------------------------------------

def test_a_recorded_linux_lock_wait_is_proven_from_the_registers():
    info = parse_lldb_transcript((DATA / "lldb-lock-x86_64.txt").read_text())
    found = stackproof.judge(info)
    assert found.proven and found.proof == "debugger-stacks"
    assert "timeout NULL" in found.detail


def test_the_recorded_macos_trap_is_not_a_deadlock():
    # libdispatch's trap stops in _dispatch_sema4_wait.cold.1: a fault, never a wait
    info = parse_lldb_transcript((DATA / "lldb-arm64-macos-trap.txt").read_text())
    assert not stackproof.judge(info).proven


def _threads(*innermost: tuple[str, ...]) -> DebuggerInfo:
    # Built here, not recorded: no Mac transcript of a deadlock exists yet (docs/MACOS.md).
    return DebuggerInfo(name="lldb", signal="SIGSTOP", stop_reason="signal SIGSTOP", threads=[
        DebugThread(tid=100 + n, frames=[Frame(index=i, function=f) for i, f in enumerate(fs)])
        for n, fs in enumerate(innermost)])


@pytest.mark.parametrize("frames, proven", [
    ((("__psynch_mutexwait", "_pthread_mutex_firstfit_lock_wait", "PyThread_acquire_lock"),
      ("__psynch_cvwait", "_pthread_cond_wait", "pthread_cond_wait")), True),
    ((("__ulock_wait", "_os_unfair_lock_lock_slow"),), True),
    ((("semaphore_wait_trap", "_dispatch_sema4_wait", "_dispatch_semaphore_wait_slow"),), True),
    ((("__psynch_cvwait", "_pthread_cond_wait", "pthread_cond_timedwait"),), False),
    ((("__psynch_mutexwait",), ("__select", "select")), False),
    ((("__GI___lll_lock_wait", "___pthread_mutex_lock", "hold_and_fork"),), True),
    ((("__lll_clocklock_wait", "__pthread_mutex_clocklock_common"),), False),
    # a CPython lock wait: only the registers tell its timeout, and with two threads there are
    # the selected thread's only
    ((("__futex_abstimed_wait_common", "__new_sem_wait_slow64", "PyThread_acquire_lock_timed"),
      ("__futex_abstimed_wait_common", "__new_sem_wait_slow64", "PyThread_acquire_lock_timed")),
     False),
], ids=["mutex+cond", "unfair-lock", "dispatch-semaphore", "timed-cond", "one-thread-in-select",
        "glibc-mutex", "glibc-timedlock", "python-locks-without-registers"])
def test_wait_primitives(frames, proven):
    assert stackproof.judge(_threads(*frames)).proven is proven


# -- the lab on the portable backend, end to end -----------------------------------------------

def test_an_unknown_lab_backend_is_one_line_and_non_zero(reaper):
    result = reaper.lab("list", env={**os.environ, "LAB_BACKEND": "solaris"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "LAB_BACKEND='solaris'" in result.stderr


def test_list_json_calls_the_core_scenarios_runnable(reaper):
    rows = {row["name"]: row for row in json.loads(reaper.lab("list", "--json",
                                                              env=PORTABLE).stdout)}
    for name in CORE_SCENARIOS:
        assert rows[name]["runnable"], rows[name]["why_not"]


@pytest.mark.slow
def test_breakpoint_trap_is_a_sigtrap_crash(reaper, tmp_path, measure):
    started = time.monotonic()
    result = reaper.lab("run", "breakpoint-trap", "--json", "--out", str(tmp_path), env=PORTABLE)
    measure("portable: breakpoint-trap -> verdict", time.monotonic() - started)
    evidence = _evidence(result)
    assert result.returncode == 0, result.stderr
    assert evidence["watch_mode"] == "portable" and evidence["verdict"] == "crash"
    assert evidence["platform"]["backend"] == "portable"
    assert "SIGTRAP" in [p["signal"] for p in evidence["processes"] if p["verdict"] == "crash"]


@pytest.mark.slow
def test_python_lock_reinit_is_ok(reaper, tmp_path):
    result = reaper.lab("run", "python-lock-reinit", "--json", "--out", str(tmp_path),
                        env=PORTABLE)
    evidence = _evidence(result)
    assert result.returncode == 0, result.stderr
    assert evidence["verdict"] == "ok" and len(evidence["processes"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("lldb") is None, reason="lldb is not installed")
def test_python_lock_held_is_proven_from_lldb_stacks(reaper, tmp_path, measure):
    # GIVEN the portable backend, which sees no syscalls, and LLDB
    started = time.monotonic()
    result = reaper.lab("run", "python-lock-held", "--debugger", "lldb", "--json", "--out",
                        str(tmp_path), env=PORTABLE)
    measure("portable: python-lock-held --debugger lldb -> verdict",
            time.monotonic() - started)
    evidence = _evidence(result)
    # THEN the child is proven deadlocked from LLDB's stacks, long before the 20 s timeout
    assert result.returncode == 0, result.stderr
    assert evidence["verdict"] == "deadlock" and evidence["detect_s"] < 10
    culprit = next(p for p in evidence["processes"] if p["verdict"] == "deadlock")
    assert culprit["proof"] == "debugger-stacks"
    debugger = evidence["debugger"]
    assert debugger["name"] == "lldb" and debugger["pid"] == culprit["pid"]
    assert debugger["threads"][0]["frames"] and debugger["registers"]
    assert (tmp_path / Path(evidence["evidence_dir"]).name / "lldb.txt").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("lldb") is None, reason="lldb is not installed")
def test_matrix_on_the_portable_backend_writes_its_own_results_file(reaper, tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    result = reaper.lab("matrix", "--only", "python-lock-*", "--trials", "1", "--debugger",
                        "lldb", "--results-dir", str(results), "--docs-dir", str(docs),
                        "--out", str(tmp_path / "runs"), env=PORTABLE)
    assert result.returncode == 0, result.stderr
    # THEN a file of its own (never the Linux backend's), whose selected cells really ran
    # (here linux-x86_64-py3.11-portable.json; on a Mac darwin-arm64-py3.11.json)
    here = dataclasses.replace(platform_info(), backend="portable")
    assert [p.name for p in results.glob("*.json")] == [f"{platform_key(here)}.json"]
    doc = json.loads(next(results.glob("*.json")).read_text())
    ran = [r for r in doc["rows"] if r["status"] == "run"]
    assert {r["scenario"] for r in ran} == {"python-lock-held", "python-lock-reinit"}
    assert all(r["rate"] == 1.0 and sum(r["counts"].values()) == 1 for r in ran), ran


_SYSCALL_FILE = re.compile(r'open(?:at)?\(.*"/proc/(?:\d+|self|thread-self)(?:/task/\d+)?/syscall"')


def _strace(reaper, tmp_path, backend: str, *lab_args: str) -> str:
    log = tmp_path / f"strace-{backend}.txt"
    reaper.run(["strace", "-f", "-qq", "-e", "trace=openat,open,socket,mknodat,mknod",
                "-o", str(log),
                sys.executable, "-m", "lab", *lab_args, "--out", str(tmp_path)],
               env={**os.environ, "LAB_BACKEND": backend}, cwd=Path(__file__).parents[1])
    return log.read_text()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_the_portable_path_reads_no_syscall_file_and_opens_no_netlink(reaper, tmp_path):
    # GIVEN a run that blocks (followed until its timeout) and one that crashes, under strace
    # (no debugger: a process has one tracer, and strace -f is it)
    traced = (_strace(reaper, tmp_path, "portable", "run", "python-lock-held", "--debugger",
                      "none", "--timeout", "1.5")
              + _strace(reaper, tmp_path, "portable", "run", "breakpoint-trap"))
    # THEN no process of the run read a /proc syscall file, opened a netlink socket or made a
    # FIFO (Windows has none: reports come as files)
    assert "/proc/" in traced  # psutil's own reads: the trace did see the run
    assert not _SYSCALL_FILE.search(traced)
    assert "AF_NETLINK" not in traced
    assert "S_IFIFO" not in traced
    # AND the control: the Linux backend, traced the same way, does all three
    control = _strace(reaper, tmp_path, "linux", "run", "python-lock-held", "--debugger", "none",
                      "--timeout", "1.5")
    assert _SYSCALL_FILE.search(control) and "AF_NETLINK" in control and "S_IFIFO" in control


def test_sigstop_of_a_portable_child_is_seen_as_stopped(reaper):
    # The tree's cleanup relies on seeing a stopped process (SIGCONT first): psutil's status
    child = reaper.popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                         stdin=subprocess.PIPE)
    backend = PortableBackend()
    os.kill(child.pid, signal.SIGSTOP)
    wait_until(lambda: backend.info(child.pid).state == "T", "a stopped child")
    os.kill(child.pid, signal.SIGCONT)
    child.stdin.close()
    assert child.wait(timeout=SHORT_TIMEOUT) == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("lldb") is None, reason="lldb is not installed")
def test_lldb_attach_child_script_proves_the_lock_deadlock_from_stacks(reaper, tmp_path):
    # GIVEN scripts/lldb_attach_child.py on the portable backend: the child runs under LLDB
    result = reaper.run([sys.executable, str(REPO / "scripts" / "lldb_attach_child.py"),
                         "--scenario", "python-lock-held", "--out", str(tmp_path), "--quiet"],
                        cwd=REPO, env=PORTABLE)
    # THEN once the child is quiet the lab interrupts it, and LLDB's stacks prove the deadlock
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.iterdir()
    evidence = json.loads((run / "evidence.json").read_text())
    child = next(p for p in evidence["processes"] if p["verdict"] == "deadlock")
    assert child["proof"] == "debugger-stacks"
    assert evidence["debugger"]["stop_reason"] == "signal SIGINT"
    assert evidence["debugger"]["threads"][0]["frames"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("lldb") is None, reason="lldb is not installed")
def test_inspect_proves_a_deadlocked_child_from_lldb_stacks(reaper, tmp_path):
    # GIVEN a parent whose forked child blocks on a lock a parent thread held, outside the lab
    parent = reaper.popen([sys.executable, str(PROGRAMS / "lock_held_at_fork.py")])
    backend = PortableBackend()
    child = wait_until(lambda: next(iter(backend.children(parent.pid)), None), "the fork")
    wait_until(lambda: backend.info(child).state == "S", "the child asleep")
    # WHEN the lab inspects the parent's tree on the portable backend with LLDB
    result = reaper.lab("inspect", str(parent.pid), "--debugger", "lldb", "--json", "--out",
                        str(tmp_path), env=PORTABLE)
    # THEN the quiet child is captured and proven deadlocked from its stacks (status 12)
    assert result.returncode == 12, result.stderr
    evidence = _evidence(result)
    record = next(p for p in evidence["processes"] if p["pid"] == child)
    assert (record["verdict"], record["proof"]) == ("deadlock", "debugger-stacks")
    assert evidence["debugger"]["pid"] == child
    # AND both processes run on: inspect leaves what it found
    assert backend.info(child).state == "S" and backend.info(parent.pid).state == "S"


def test_on_macos_a_fault_signal_names_its_mach_exception():
    ending = exits.from_returncode(-int(signal.SIGTRAP), system="darwin")
    assert ending.signal == "SIGTRAP" and "EXC_BREAKPOINT" in ending.detail
    assert "EXC_" not in exits.from_returncode(-int(signal.SIGTRAP), system="linux").detail


def test_the_workflow_runs_the_portable_path_on_every_kind_of_runner():
    yaml = pytest.importorskip("yaml")
    flow = yaml.safe_load((REPO / ".github" / "workflows" / "matrix.yml").read_text())
    steps = flow["jobs"]["run"]["steps"]
    # Linux: a second pass with LAB_BACKEND=portable; everywhere: this file's tests
    second = next(s for s in steps if s.get("env", {}).get("LAB_BACKEND") == "portable")
    assert second["if"] == "runner.os == 'Linux'" and "python -m lab matrix" in second["run"]
    assert any("tests/test_portable_backend.py" in s.get("run", "") for s in steps)
    # macOS: the matrix with LLDB; Windows: the exit statuses, then the spawn cells
    assert any("--debugger lldb" in s.get("run", "") and "macOS" in s.get("run", "")
               for s in steps)
    windows = flow["jobs"]["windows"]
    assert windows["runs-on"] == "windows-latest"
    assert any("ntstatus" in s.get("run", "") and "reports_written" in s["run"]
               for s in windows["steps"])
    spawn = next(s for s in windows["steps"] if "python -m lab matrix" in s.get("run", ""))
    assert "*/mp-spawn" in spawn["run"] and not spawn.get("continue-on-error")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("lldb") is None, reason="lldb is not installed")
def test_watch_of_your_own_program_proves_its_child_deadlocked(reaper, tmp_path):
    # GIVEN a program of the user's whose forked child blocks on a lock held at fork
    result = reaper.lab("watch", "--debugger", "lldb", "--json", "--out", str(tmp_path), "--",
                        sys.executable, str(PROGRAMS / "lock_held_at_fork.py"), env=PORTABLE)
    # THEN the watch proves it from LLDB's stacks (status 12), and the fork hook's report
    # names the thread the child did not inherit (no /proc snapshot on this backend)
    assert result.returncode == 12, result.stderr
    evidence = _evidence(result)
    assert evidence["watch_mode"] == "portable"
    (child,) = [p for p in evidence["processes"] if p["verdict"] == "deadlock"]
    assert child["proof"] == "debugger-stacks"
    assert evidence["parent"]["source"] == "hook"
    assert "holder" in [t["python_name"] for t in evidence["parent"]["threads_at_fork"]]


@pytest.mark.slow
def test_a_double_fork_daemon_is_found_by_the_run_marker_and_stopped(reaper, tmp_path):
    # GIVEN a program whose middle child calls setsid() and forks a daemon, then exits: no
    # subreaper brings the orphan back on this backend
    result = reaper.lab("watch", "--debugger", "none", "--timeout", "2", "--json", "--out",
                        str(tmp_path), "--", sys.executable,
                        str(PROGRAMS / "double_fork_daemon.py"), env=PORTABLE)
    # THEN the run's marker finds it when the rest has ended: a hang at the timeout, stopped
    # by the lab (the autouse fixture fails the test if it outlived the lab), as on Linux
    evidence = _evidence(result)
    assert evidence["verdict"] == "hang" and result.returncode == 13, result.stderr
    [daemon] = [p for p in evidence["processes"] if p["verdict"] == "hang"]
    assert daemon["killed_by_lab"] and "double_fork_daemon.py" in " ".join(daemon["argv"])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("lldb") is None, reason="lldb is not installed")
def test_a_failed_look_at_a_quiet_process_is_not_the_runs_error(reaper, tmp_path):
    # GIVEN a program whose quiet child no debugger can attach to (its parent traces it), and
    # which ends cleanly once the test writes into a FIFO
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    lab = reaper.popen([sys.executable, "-m", "lab", "watch", "--debugger", "lldb", "--json",
                        "--timeout", "60", "--out", str(tmp_path / "runs"), "--",
                        sys.executable, str(PROGRAMS / "child_no_debugger_can_attach.py"),
                        str(gate)],
                       cwd=REPO, env=PORTABLE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    # WHEN the lab's look at the quiet child has failed (its progress line says so)
    seen = []

    def look_failed():
        # readline returns "" at the latest when the lab ends: --timeout bounds it
        line = lab.stderr.readline()
        seen.append(line)
        return re.search(r"\] debugger\s+failed: lldb may not attach", line) or line == ""

    wait_until(look_failed, "a failed debugger look", timeout=90)
    assert lab.poll() is None and seen[-1], "".join(seen)
    with open(gate, "wb") as fifo:  # let the program end
        fifo.write(b"x")
    out, err = lab.communicate(timeout=60)
    # THEN the run ends as the program did: ok, exit status 0, no error from the look
    evidence = json.loads(out)
    assert evidence["verdict"] == "ok" and lab.returncode == 0, "".join(seen) + err
    assert not evidence["error"] and evidence["debugger"] is None


def test_an_orphan_left_a_zombie_by_an_init_that_does_not_reap_has_ended(reaper, tmp_path):
    # GIVEN a program whose child ends after its parent, under an init that never reaps the
    # orphan (a container without --init): the child stays a zombie that is not the lab's
    result = reaper.run([sys.executable, str(PROGRAMS / "non_reaping_init.py"), sys.executable,
                         "-m", "lab", "watch", "--debugger", "none", "--timeout", "20",
                         "--json", "--out", str(tmp_path), "--", sys.executable,
                         str(PROGRAMS / "orphan_outlives_parent.py")], cwd=REPO, env=PORTABLE)
    # THEN the run ends when the program has ended: ok, not a hang at the timeout
    evidence = _evidence(result)
    assert evidence["verdict"] == "ok" and result.returncode == 0, result.stderr
    [child] = [p for p in evidence["processes"] if p["pid"] != evidence["processes"][0]["pid"]]
    assert "a zombie that its parent" in child["detail"]
    assert evidence["detect_s"] < 20


# -- what Windows runs, run here: psutil's signals, the root's end from Popen, reports as files -

def _ended(backend: PortableBackend, pid: int) -> bool:
    try:
        return backend.info(pid).state == "Z"  # an orphan's zombie, for its init to reap
    except Gone:
        return True


def test_a_stopped_child_and_a_root_that_ignores_sigterm_are_ended_through_psutil(reaper):
    # GIVEN a portable tree: a root that ignores SIGTERM, and its child stopped by SIGSTOP
    program = ("import os, signal, threading\n"
               "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
               "if os.fork() == 0:\n"
               "    os.kill(os.getpid(), signal.SIGSTOP)\n"
               "    os._exit(0)\n"
               "print('ready', flush=True)\n"
               "threading.Event().wait()\n")
    backend = PortableBackend()
    tree = ProcessTree(backend, run_id=f"portable-stop-{os.getpid()}")
    root = tree.spawn([sys.executable, "-c", program], env=dict(os.environ), cwd=None)
    reaper.procs.append(root)
    assert root.stdout.readline() == b"ready\n"

    def child_stopped():
        tree.update()
        return [pid for pid in tree.unfinished() if pid != root.pid
                and backend.info(pid).state == "T"]

    child = wait_until(child_stopped, "a stopped child")[0]
    # WHEN the tree is stopped
    tree.stop()
    # THEN the root ended of the kill (it ignored SIGTERM), as Popen's poll read it
    record = tree.members[root.pid].record
    assert root.returncode == -signal.SIGKILL
    assert record.killed_by_lab and record.signal == "SIGKILL"
    assert tree.members[root.pid].reaped_by_lab
    # AND the stopped child was resumed and ended too
    assert tree.members[child].record.killed_by_lab and _ended(backend, child)


def test_the_roots_exit_code_comes_from_popen_on_the_portable_backend(reaper):
    tree = ProcessTree(PortableBackend())
    root = tree.spawn([sys.executable, "-c", "raise SystemExit(3)"], env=dict(os.environ),
                      cwd=None)
    reaper.procs.append(root)
    wait_until(lambda: (tree.update(), tree.all_finished())[1], "the root's end")
    record = tree.members[root.pid].record
    assert (record.exit_code, record.verdict, root.returncode) == (3, "error", 3)
    tree.stop()


def _reporter(count: int) -> list[str]:
    """A real process that sends ``count`` reports, every third longer than PIPE_BUF."""
    program = ("import os\n"
               "from lab import reports\n"
               f"for seq in range({count}):\n"
               "    reports.send(reports.Event.FINDING, pid=os.getpid(), seq=seq,\n"
               "                 pad='x' * (5000 if seq % 3 == 0 else 10))\n")
    return [sys.executable, "-c", program]


def test_reports_written_as_files_arrive_whole_and_in_each_writers_order(reaper, tmp_path):
    from lab.reports import DIR_VAR, ENV_VAR, PIPE_BUF, ReportChannel

    # GIVEN a report channel without a FIFO (what Windows has), and three writers at once
    channel = ReportChannel(str(tmp_path), fifo=False)
    assert channel.environment() == {DIR_VAR: str(tmp_path)} and channel.fileno() is None
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, DIR_VAR)}
    writers = [reaper.popen(_reporter(30), env={**env, **channel.environment()}, cwd=REPO)
               for _ in range(3)]
    assert all(writer.wait(timeout=SHORT_TIMEOUT) == 0 for writer in writers)
    # WHEN the lab reads the channel (a second read finds nothing new)
    got = channel.read()
    assert channel.read() == []
    # THEN every report arrived once and whole, long ones too, each writer's in its order
    assert len(got) == 90
    assert all(len(r["pad"]) == (5000 if r["seq"] % 3 == 0 else 10) for r in got)
    assert 5000 > PIPE_BUF
    for writer in writers:
        assert [r["seq"] for r in got if r["pid"] == writer.pid] == list(range(30))
    # AND the directory is empty again: each file is read once, then removed
    assert list(tmp_path.iterdir()) == []
    channel.close()


def test_a_portable_run_makes_no_fifo_and_still_hears_the_fork_report(reaper, tmp_path):
    # GIVEN the portable backend's run of a scenario that reports the threads at its fork
    result = reaper.lab("run", "python-lock-held", "--debugger", "none", "--timeout", "1.5",
                        "--json", "--out", str(tmp_path), env=PORTABLE)
    evidence = _evidence(result)
    # THEN the report arrived, through a directory: the environment names no FIFO
    assert "LAB_REPORT_DIR" in evidence["environment"]
    assert "LAB_REPORT_FIFO" not in evidence["environment"]
    assert [t["name"] for t in evidence["parent"]["threads_at_fork"]] == ["lock-holder"]
