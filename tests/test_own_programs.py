"""Programs nobody here wrote, as a user would watch them: no false proof, exit statuses that
mean what they say (issue: your own program under `lab watch`)."""

import json
import sys

import pytest

from conftest import PROGRAMS

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the watcher reads /proc")

EXIT = {"ok": 0, "error": 10, "crash": 11, "deadlock": 12, "hang": 13}


def watch(reaper, tmp_path, *cmd, timeout="60"):
    result = reaper.lab("watch", "--json", "--quiet", "--debugger", "none", "--timeout",
                        timeout, "--out", str(tmp_path), "--", *cmd)
    assert result.stdout, result.stderr
    return result, json.loads(result.stdout)


def program(name):
    return [sys.executable, str(PROGRAMS / name)]


# -- 1. no false proof: signals and timers ---------------------------------------------------

def test_a_child_that_armed_an_alarm_is_not_called_deadlocked(reaper, tmp_path):
    # GIVEN a child blocked on an orphaned lock, with alarm(2) and a raising SIGALRM handler
    result, evidence = watch(reaper, tmp_path, *program("alarm_escapes_lock.py"))
    # THEN no deadlock is claimed: the alarm ends the wait, the child and the run exit 0
    assert evidence["verdict"] == "ok" and result.returncode == EXIT["ok"], evidence["processes"]
    assert evidence["detect_s"] >= 2.0
    assert "the alarm ended the wait" in (tmp_path.glob("*/output.txt").__next__()).read_text()


def test_a_service_waiting_for_its_sigterm_handler_is_a_hang_that_names_the_handler(
        reaper, tmp_path):
    # GIVEN a single-threaded service that waits in Event().wait() for its SIGTERM handler
    result, evidence = watch(reaper, tmp_path, *program("service_waits_for_sigterm.py"),
                             timeout="2")
    # THEN it is not a deadlock but a hang at the timeout, and the detail says what can wake it
    assert evidence["verdict"] == "hang" and result.returncode == EXIT["hang"]
    [root] = evidence["processes"]
    assert "SIGTERM" in root["detail"] and "by design" in root["detail"], root["detail"]
    assert "SIGTERM" in root["signals"]["caught"]


def test_a_service_woken_by_its_interval_timer_ends_ok(reaper, tmp_path):
    result, evidence = watch(reaper, tmp_path, *program("service_waits_for_sigterm.py"),
                             "--timer", "1")
    assert evidence["verdict"] == "ok" and result.returncode == EXIT["ok"]


def test_a_native_wait_is_a_deadlock_whatever_handlers_the_child_has(reaper, tmp_path):
    # GIVEN a child in a glibc mutex orphaned at fork, with Python handlers for SIGUSR1,
    # SIGTERM and SIGALRM (a Celery prefork child handles SIGUSR1)
    result, evidence = watch(reaper, tmp_path, *program("native_wait_with_handlers.py"))
    # THEN no handler can end that wait: the deadlock is proven
    assert evidence["verdict"] == "deadlock" and result.returncode == EXIT["deadlock"]
    [child] = [p for p in evidence["processes"] if p["verdict"] == "deadlock"]
    assert {"SIGUSR1", "SIGTERM"} <= set(child["signals"]["caught"])


def test_a_pending_signal_is_a_possible_wakeup(reaper, tmp_path):
    # GIVEN a process that blocks SIGTERM, then sends it to itself, and waits forever on a lock
    # it holds: the signal stays pending (blocked), so it cannot wake it: a deadlock
    code = ("import os, signal, threading\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])\n"
            "os.kill(os.getpid(), signal.SIGUSR1)\n"
            "lock = threading.Lock(); lock.acquire(); lock.acquire()\n")
    _, evidence = watch(reaper, tmp_path, sys.executable, "-c", code)
    assert evidence["verdict"] == "deadlock"
    assert evidence["processes"][0]["signals"]["pending"] == ["SIGUSR1"]


# -- 2. exit statuses that mean what they say ------------------------------------------------

@pytest.mark.parametrize("script", [
    "grep -q nothing /dev/null; echo done",
    "yes | head -n 1",
    "sleep 100 & kill $!; wait; echo done",
], ids=["grep-finds-nothing", "pipeline-sigpipe", "kills-its-own-child"])
def test_ordinary_process_control_is_not_an_error_or_a_crash(reaper, tmp_path, script):
    result, evidence = watch(reaper, tmp_path, "sh", "-c", script)
    assert evidence["verdict"] == "ok" and result.returncode == 0, evidence["processes"]
    # every process keeps its own status
    assert any(p["exit_code"] not in (0, None) for p in evidence["processes"][1:]), \
        evidence["processes"]


def test_a_segfault_of_a_child_is_a_crash_even_when_the_parent_exits_0(reaper, tmp_path):
    result, evidence = watch(reaper, tmp_path, *program("segv_child_parent_ok.py"))
    assert evidence["verdict"] == "crash" and result.returncode == EXIT["crash"]


def test_the_root_exit_status_makes_the_run_an_error(reaper, tmp_path):
    result, evidence = watch(reaper, tmp_path, "sh", "-c", "true; exit 3")
    assert evidence["verdict"] == "error" and result.returncode == EXIT["error"]


def test_two_identical_workers_get_the_same_verdict(reaper, tmp_path):
    # GIVEN two children forked while a thread held the lock both acquire
    _, evidence = watch(reaper, tmp_path, *program("two_workers_one_lock.py"))
    # THEN both are proven deadlocked, not one deadlock and one hang
    children = [p for p in evidence["processes"] if p["ppid"] == evidence["processes"][0]["pid"]]
    assert [p["verdict"] for p in children] == ["deadlock", "deadlock"], children


def test_a_root_that_handles_sigterm_is_still_stopped_at_the_timeout(reaper, tmp_path):
    # the lab's SIGTERM is handled (the event is set, it exits 0): its record says the lab
    # stopped it, and nothing is left
    result, evidence = watch(reaper, tmp_path, *program("service_waits_for_sigterm.py"),
                             timeout="1")
    assert evidence["verdict"] == "hang" and evidence["processes"][0]["killed_by_lab"]
