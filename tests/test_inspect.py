"""`lab inspect PID` on real processes started outside the lab: verdicts, stacks, bad input,
and a target left exactly as it was found (running, untraced) whatever happens."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import PROGRAMS, REPO, SHORT_TIMEOUT, proc_status, wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")



def blocked_forever(pid: int) -> bool:
    """Every thread of ``pid`` sleeps in an untimed private futex wait (the deadlock shape)."""
    from lab import process
    from lab.watch.judge import waits_forever

    try:
        threads = process.backend().threads(pid)
    except process.Gone:
        return False
    return bool(threads) and all(waits_forever(t) for t in threads)




def deadlocked_tree(reaper, program: str, python: str = sys.executable) -> tuple[int, int]:
    """Start ``program`` (a parent that forks a child that deadlocks) outside the lab; return
    (parent, child) once the child is blocked forever."""
    from lab import process

    parent = reaper.popen([python, str(PROGRAMS / program)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child = wait_until(lambda: next(iter(process.backend().children(parent.pid)), None),
                       f"{program} forked")
    wait_until(lambda: blocked_forever(child), f"the child of {program} blocked")
    return parent.pid, child


def as_found(pid: int) -> tuple[str, str]:
    """(state letter, TracerPid) of ``pid``."""
    status = proc_status(pid)
    assert status is not None, f"process {pid} is gone"
    return status["State"][0], status["TracerPid"]


def inspect(reaper, tmp_path, pid, *extra, timeout=SHORT_TIMEOUT * 4):
    result = reaper.lab("inspect", str(pid), "--json", "--out", str(tmp_path), *extra,
                        timeout=timeout)
    evidence = json.loads(result.stdout) if result.stdout.strip() else None
    return result, evidence


def by_pid(evidence, pid):
    return next(p for p in evidence["processes"] if p["pid"] == pid)


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_a_deadlocked_child_is_proven_and_the_tree_is_left_running(reaper, tmp_path, measure):
    # GIVEN a parent whose forked child deadlocked on a lock a parent thread held, outside the lab
    parent, child = deadlocked_tree(reaper, "lock_held_at_fork.py")
    # WHEN the lab inspects the parent (and so its descendants)
    began = time.monotonic()
    result, evidence = inspect(reaper, tmp_path, parent, "--debugger", "gdb")
    measure("lab inspect, deadlocked tree, gdb (wall, with interpreter start)",
            time.monotonic() - began)
    # THEN the child is a proven deadlock and the command exits as `watch` would (12)
    assert result.returncode == 12, result.stderr
    assert evidence["mode"] == "inspect" and evidence["verdict"] == "deadlock"
    assert by_pid(evidence, child)["verdict"] == "deadlock"
    assert by_pid(evidence, parent)["verdict"] == "ok"
    # AND py-spy read the child's Python stack, where gdb's py-bt agrees on the innermost frame
    spied = next(s for s in evidence["python_stacks"] if s["pid"] == child)
    top = spied["threads"][0]["python_frames"][0]
    assert (os.path.basename(top["file"]), top["line"]) == ("lock_held_at_fork.py", 29)
    assert spied["mode"] == "nonblocking" and spied["agreement"][0]["agree"] is True
    # AND the parent's threads now are named (the holder, by its Python name)
    assert "holder" in {t["python_name"] for t in evidence["parent"]["threads_at_fork"]}
    assert evidence["inspect"]["parent"]["pid"] == parent
    # AND the pause was measured, and both processes run on, untraced, not stopped
    (pause,) = evidence["inspect"]["pauses"]
    assert pause["pid"] == child and 0 < pause["seconds"] < SHORT_TIMEOUT
    assert evidence["inspect"]["left_as_found"] is True
    assert as_found(child) == ("S", "0") and as_found(parent) == ("S", "0")
    folder = tmp_path / evidence["run_id"]
    assert (folder / "summary.md").exists() and (folder / "gdb.txt").exists()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert "## What inspect did to the processes" in (folder / "summary.md").read_text()


def test_without_a_debugger_nothing_is_attached(reaper, tmp_path, measure):
    # GIVEN the same deadlocked tree
    parent, child = deadlocked_tree(reaper, "lock_held_at_fork.py")
    # WHEN it is inspected with --debugger none
    began = time.monotonic()
    result, evidence = inspect(reaper, tmp_path, parent, "--debugger", "none", "--quiet")
    measure("lab inspect, deadlocked tree, --debugger none (wall, with interpreter start)",
            time.monotonic() - began)
    # THEN the verdict and the Python stacks come without any pause
    assert result.returncode == 12, result.stderr
    assert evidence["debugger"] is None and evidence["inspect"]["pauses"] == []
    assert {s["pid"] for s in evidence["python_stacks"]} == {parent, child}
    assert evidence["timings"]["verdict_s"] < 1.0


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_a_mutex_owner_is_named_in_the_live_parent_with_its_stack(reaper, tmp_path):
    # GIVEN a child deadlocked on a pthread mutex a native thread of its parent holds
    parent, child = deadlocked_tree(reaper, "native_mutex_held.py")
    # WHEN it is inspected with --parent
    result, evidence = inspect(reaper, tmp_path, child, "--parent", "--debugger", "gdb")
    assert result.returncode == 12, result.stderr
    # THEN the fork story names the parent's thread with the owner TID, and what it does now
    (told,) = evidence["inspect"]["fork_story"]
    owner = told["owner_tid"]
    assert told["parent_pid"] == parent and told["parent_thread"]["tid"] == owner
    assert "reading (read)" in told["parent_thread"]["doing"]
    assert str(owner) in told["summary"]
    # AND the parent's native stacks were captured too, in a transcript of their own
    captured = evidence["inspect"]["parent"]["debugger"]
    assert captured["transcript"] == "parent/gdb.txt"
    assert owner in {t["tid"] for t in captured["threads"]}
    assert (tmp_path / evidence["run_id"] / "parent" / "gdb.txt").exists()
    assert as_found(parent)[1] == "0" and as_found(child) == ("S", "0")


def test_a_process_that_is_not_python_gets_native_stacks_only(reaper, tmp_path):
    # GIVEN a native program, sleeping
    sleeper = reaper.popen(["sleep", "600"])
    wait_until(lambda: as_found(sleeper.pid)[0] == "S", "sleep asleep")
    # WHEN it is inspected
    result, evidence = inspect(reaper, tmp_path, sleeper.pid, "--debugger", "none")
    # THEN one line says so, no Python stack is claimed, and it is judged ok (exit 0)
    assert result.returncode == 0, result.stderr
    assert f"PID {sleeper.pid} is not a Python process: native stacks only" in result.stderr
    assert evidence["python_stacks"] == [] and evidence["verdict"] == "ok"
    assert "sleeping (clock_nanosleep)" in by_pid(evidence, sleeper.pid)["detail"]


def _zombie(reaper):
    child = reaper.popen(["true"])
    wait_until(lambda: (proc_status(child.pid) or {}).get("State", "")[:1] == "Z",
               "true exited")
    return child.pid


def _gone(reaper):
    child = reaper.popen(["true"])
    child.wait(timeout=SHORT_TIMEOUT)
    return child.pid


@pytest.mark.parametrize("make, status, words", [
    (_gone, 16, "no process has PID"),
    (_zombie, 17, "is a zombie"),
    (lambda _reaper: "0", 2, "not a process id"),
    (lambda _reaper: "twelve", 2, "not a process id"),
], ids=["pid=exited", "pid=zombie", "pid=0", "pid=text"])
def test_bad_input_is_one_line_and_a_status_of_its_own(reaper, tmp_path, make, status, words):
    # GIVEN a PID that cannot be inspected
    pid = make(reaper)
    # WHEN the lab is asked to inspect it
    result = reaper.lab("inspect", str(pid), "--out", str(tmp_path), timeout=SHORT_TIMEOUT)
    # THEN one line says why, with its own exit status, and nothing is written
    assert result.returncode == status, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("lab: error: ") and words in line
    assert list(tmp_path.iterdir()) == []


def test_the_lab_refuses_to_inspect_itself(capsys, tmp_path):
    # GIVEN this very process as the lab
    from lab.cli import main

    # WHEN it is asked to inspect its own PID
    status = main(["inspect", str(os.getpid()), "--out", str(tmp_path)])
    # THEN it refuses with its own status (18): attaching would stop the one waiting
    assert status == 18
    assert "is this lab process itself" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run a process as another user")
def test_another_users_process_without_the_right_is_refused_with_a_remedy(reaper, tmp_path):
    # GIVEN a process of uid 65534, and a lab without CAP_SYS_PTRACE (bounding set dropped)
    other = reaper.popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          "sleep", "600"])
    wait_until(lambda: (proc_status(other.pid) or {}).get("Uid", "").startswith("65534"),
               "the process runs as uid 65534")
    result = reaper.run(["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace",
                         sys.executable, "-m", "lab", "inspect", str(other.pid), "--out",
                         str(tmp_path)], timeout=SHORT_TIMEOUT, cwd=REPO)
    # THEN it is refused as ptrace refused (6), with the reason and the remedy
    assert result.returncode == 6, result.stderr
    (line,) = result.stderr.splitlines()
    assert "belongs to uid 65534" in line and "CAP_SYS_PTRACE" in line and "SYS_PTRACE" in line


def test_a_target_that_ends_before_its_first_sample_is_still_reported(reaper):
    # A loaded machine can end the target between the check that it exists and the window's
    # first sample: the window must still report it (it once left the evidence without it)
    from lab import process
    from lab.inspector import sample

    # GIVEN the PID of a process that has ended and been reaped since it was checked
    ended = reaper.popen([sys.executable, "-c", "pass"])
    assert ended.wait(timeout=SHORT_TIMEOUT) == 0
    # WHEN the window samples it
    seen = sample.TreeSampler(process.backend(), ended.pid, tree=True).run(window=0.2)
    # THEN it is there, gone, and judged as a process that exited during the inspection
    assert list(seen) == [ended.pid] and seen[ended.pid].gone
    (record,) = sample.judge_all(seen, 0.2)
    assert record.pid == ended.pid and "exited during the inspection" in record.detail


def test_a_target_that_exits_during_the_window_is_reported(reaper, tmp_path):
    # GIVEN a process that exits as soon as its stdin closes
    target = reaper.popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE)
    # WHEN it exits once the inspection has started sampling (the progress line: a handshake)
    lab = reaper.popen([sys.executable, "-m", "lab", "inspect", str(target.pid), "--window",
                        "5", "--out", str(tmp_path), "--debugger", "none"], cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "sampling" in lab.stderr.readline()
    target.stdin.close()
    target.wait(timeout=SHORT_TIMEOUT)
    err = lab.stderr.read()
    lab.wait(timeout=SHORT_TIMEOUT)
    # THEN the inspection ends with "target exited" (7) and evidence that says so
    assert lab.returncode == 7, err
    assert f"process {target.pid} exited during the inspection" in err
    (folder,) = tmp_path.iterdir()
    evidence = json.loads((folder / "evidence.json").read_text())
    assert evidence["complete"] is True and "exited during" in evidence["processes"][0]["detail"]


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["signal=SIGINT", "signal=SIGTERM"])
def test_an_interrupt_while_attached_detaches_first(reaper, tmp_path, sig, status):
    # GIVEN an inspection whose debugger is attaching to a deadlocked child
    parent, child = deadlocked_tree(reaper, "lock_held_at_fork.py")
    lab = reaper.popen([sys.executable, "-m", "lab", "inspect", str(parent), "--debugger", "gdb",
                        "--out", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    lines = []
    for line in lab.stderr:
        lines.append(line)
        if "gdb: attaching to process" in line:
            break
    # WHEN the signal arrives
    lab.send_signal(sig)
    lines += lab.stderr.readlines()
    lab.wait(timeout=SHORT_TIMEOUT)
    # THEN the lab exits 128+N, and the child is neither traced nor stopped
    assert lab.returncode == status, "".join(lines)
    assert as_found(child) == ("S", "0") and as_found(parent) == ("S", "0")
    (folder,) = tmp_path.iterdir()
    evidence = json.loads((folder / "evidence.json").read_text())
    assert evidence["verdict"] == "interrupted"
    assert "after the verdict deadlock" in evidence["error"]


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_a_debugger_that_does_not_finish_in_time_leaves_the_target_running(reaper, tmp_path):
    # GIVEN a deadlocked child, and a debugger deadline no gdb can meet
    parent, child = deadlocked_tree(reaper, "lock_held_at_fork.py")
    # WHEN it is inspected
    result, evidence = inspect(reaper, tmp_path, parent, "--debugger", "gdb",
                               "--debugger-timeout", "0.01")
    # THEN the debugger failure is reported (8) after the verdict, the evidence is complete
    assert result.returncode == 8, result.stderr
    assert evidence["verdict"] == "deadlock" and evidence["complete"] is True
    assert evidence["debugger"]["error"]
    # AND the child was detached: running (asleep), untraced
    assert as_found(child) == ("S", "0")


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_the_reported_pause_bounds_the_pause_the_target_saw(reaper, tmp_path, measure):
    # GIVEN a process that measures, from inside, the longest gap in its own heartbeat
    target = reaper.popen([sys.executable, str(PROGRAMS / "pause_meter.py")], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline() == "ready\n"
    # WHEN it is inspected with gdb (nothing is stuck: the debugger captures PID itself)
    result, evidence = inspect(reaper, tmp_path, target.pid, "--debugger", "gdb", "--quiet")
    out, _ = target.communicate("", timeout=SHORT_TIMEOUT)
    gap = float(out.split()[-1])
    # THEN it was paused (the gap is far above its 1 ms beat), for no longer than reported
    assert result.returncode == 0, result.stderr
    (pause,) = evidence["inspect"]["pauses"]
    measure("pause seen inside the target while gdb was attached", gap)
    measure("pause the lab reported (gdb capture, an upper bound)", pause["seconds"])
    assert 0.02 < gap <= pause["seconds"], (gap, pause)


def test_the_help_lists_inspects_exit_statuses():
    from lab.cli import build_parser

    epilog = " ".join(build_parser().epilog.split())
    assert "16 no such process, 17 a zombie, 18 the lab itself" in epilog


def test_a_pool_workers_parent_is_read_without_being_asked(reaper, tmp_path):
    # GIVEN a deadlocked child forked without exec, inspected on its own (--no-tree)
    parent, child = deadlocked_tree(reaper, "lock_held_at_fork.py")
    result, evidence = inspect(reaper, tmp_path, child, "--no-tree", "--debugger", "none")
    # THEN only the child is judged, but its parent's threads and Python stacks are read too
    assert result.returncode == 12, result.stderr
    assert [p["pid"] for p in evidence["processes"]] == [child]
    told = evidence["inspect"]["parent"]
    assert told["pid"] == parent and "forked from it without exec" in told["why"]
    assert {s["pid"] for s in evidence["python_stacks"]} == {child, parent}
    assert evidence["parent"]["source"] == "inspect"
    assert as_found(parent) == ("S", "0")
