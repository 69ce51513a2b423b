"""`lab watch` judges every descendant of real child programs: one test per verdict."""

import json
import shutil
import sys

import pytest

from conftest import PROGRAMS

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the watcher reads Linux /proc")

# Exit statuses of `lab watch` (documented in docs/CLI.md and `python -m lab watch --help`).
EXIT = {"ok": 0, "error": 10, "crash": 11, "deadlock": 12, "hang": 13}
HANG_TIMEOUT = "2"   # long enough for a spin to show, short enough for the suite
NO_HANG = "60"       # LONG: only catches a lab that fails to end a run


def watch(reaper, program, timeout=NO_HANG, *extra, prefix=()):
    result = reaper.run([*prefix, sys.executable, "-m", "lab", "watch", "--json", "--quiet",
                         "--debugger", "none", "--timeout", timeout, "--out",
                         str(reaper.tmp), *extra, "--", sys.executable, str(PROGRAMS / program)],
                        cwd=str(PROGRAMS.parents[1]))
    assert result.stdout, result.stderr
    return result, json.loads(result.stdout)


@pytest.fixture
def lab(reaper, tmp_path):
    reaper.tmp = tmp_path
    return reaper


def by_verdict(evidence, verdict):
    return [p for p in evidence["processes"] if p["verdict"] == verdict]


def test_python_lock_held_at_fork_is_a_proven_deadlock_in_the_child(lab):
    result, evidence = watch(lab, "lock_held_at_fork.py")
    assert evidence["verdict"] == "deadlock" and result.returncode == EXIT["deadlock"]
    [dead] = by_verdict(evidence, "deadlock")
    root = evidence["processes"][0]
    assert dead["ppid"] == root["pid"]
    [thread] = dead["threads"]
    assert thread["syscall"]["name"] == "futex"
    assert thread["syscall"]["futex"]["timeout"] is None
    # THEN the proof did not wait for --timeout
    assert evidence["detect_s"] < 10


def test_native_mutex_held_by_a_native_thread_is_a_deadlock(lab):
    if not shutil.which("cc"):
        pytest.skip("no C compiler to build the native mutex holder")
    result, evidence = watch(lab, "native_mutex_held.py")
    assert evidence["verdict"] == "deadlock", result.stderr
    [dead] = by_verdict(evidence, "deadlock")
    assert dead["threads"][0]["syscall"]["futex"]["op"] == "FUTEX_WAIT_PRIVATE"


@pytest.mark.parametrize("program, signal", [
    ("segv_child_parent_ok.py", "SIGSEGV"),
    ("abort_child_parent_ok.py", "SIGABRT"),
], ids=["signal=SIGSEGV", "signal=SIGABRT"])
def test_child_killed_by_a_signal_is_a_crash_even_when_its_parent_exits_0(lab, program, signal):
    result, evidence = watch(lab, program)
    assert evidence["verdict"] == "crash" and result.returncode == EXIT["crash"]
    root = evidence["processes"][0]
    assert root["exit_code"] == 0 and root["verdict"] == "ok"
    [crashed] = by_verdict(evidence, "crash")
    assert crashed["signal"] == signal and crashed["ppid"] == root["pid"]
    assert evidence["watch_mode"] == "netlink"


def test_deadlock_in_a_grandchild_is_found(lab):
    result, evidence = watch(lab, "grandchild_deadlock.py")
    assert evidence["verdict"] == "deadlock"
    root_pid = evidence["processes"][0]["pid"]
    [dead] = by_verdict(evidence, "deadlock")
    child = next(p for p in evidence["processes"] if p["pid"] == dead["ppid"])
    assert child["ppid"] == root_pid  # the deadlocked one is a grandchild


def test_spinning_child_is_a_hang_described_as_livelock(lab):
    result, evidence = watch(lab, "spin.py", HANG_TIMEOUT)
    assert evidence["verdict"] == "hang" and result.returncode == EXIT["hang"]
    assert any("livelock" in p["detail"] for p in by_verdict(evidence, "hang"))


def test_futex_wait_with_a_timeout_that_ends_is_ok(lab):
    result, evidence = watch(lab, "timed_wait_ok.py")
    assert evidence["verdict"] == "ok" and result.returncode == 0


def test_timed_futex_waits_forever_are_a_hang_never_a_deadlock(lab):
    result, evidence = watch(lab, "timed_wait_forever.py", HANG_TIMEOUT)
    assert evidence["verdict"] == "hang"
    assert not by_verdict(evidence, "deadlock")
    assert any("with a timeout" in p["detail"] for p in by_verdict(evidence, "hang"))


def test_pipe_wait_is_a_deadlock_across_processes_with_its_cycle(lab):
    # The parent waits for its child in waitpid; the child reads a pipe whose only writer is
    # the parent: neither can ever end the other's wait (no timer, no handler from outside)
    result, evidence = watch(lab, "pipe_wait.py", HANG_TIMEOUT)
    assert evidence["verdict"] == "deadlock", evidence["processes"]
    cycle = evidence["wait_for_cycle"]
    parent, child = evidence["processes"][0]["pid"], evidence["processes"][1]["pid"]
    assert cycle["members"] == sorted([parent, child])
    kinds = {(edge["from"], edge["to"]): edge["kind"] for edge in cycle["edges"]}
    assert kinds == {(parent, child): "child-exit", (child, parent): "pipe-read"}
    assert f"PID {child} reads pipe" in cycle["summary"]
    assert all(p["proof"] == "wait-for-cycle" for p in by_verdict(evidence, "deadlock"))


def test_non_zero_exit_is_an_error(lab):
    result, evidence = watch(lab, "exit_error.py")
    assert evidence["verdict"] == "error" and result.returncode == EXIT["error"]
    assert evidence["processes"][0]["exit_code"] == 3


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1)")
def test_without_the_process_connector_the_fallback_is_named_and_still_proves(lab):
    # GIVEN a network namespace where the kernel's process connector does not exist
    result, evidence = watch(lab, "lock_held_at_fork.py", prefix=("unshare", "-n"))
    # THEN the evidence says it polled, why, and what that costs, and the deadlock is proven
    assert evidence["watch_mode"] == "polling"
    assert "process connector unavailable" in evidence["watch_note"]
    assert evidence["verdict"] == "deadlock"


@pytest.mark.parametrize("mode", ["netlink", "polling"])
def test_a_double_fork_daemon_is_found_and_stopped_in_both_modes(lab, mode):
    if mode == "polling" and not shutil.which("unshare"):
        pytest.skip("needs unshare(1) for a namespace without the process connector")
    # GIVEN a program whose middle child calls setsid() and forks a daemon, then exits
    prefix = ("unshare", "-n") if mode == "polling" else ()
    result, evidence = watch(lab, "double_fork_daemon.py", HANG_TIMEOUT, prefix=prefix)
    # THEN the daemon is one of the run's processes, still running at the timeout: a hang,
    # stopped by the lab (the autouse fixture fails the test if it outlived the lab)
    assert evidence["watch_mode"] == mode
    assert evidence["verdict"] == "hang" and result.returncode == EXIT["hang"], result.stderr
    [daemon] = by_verdict(evidence, "hang")
    assert daemon["killed_by_lab"] and "double_fork_daemon.py" in " ".join(daemon["argv"])
