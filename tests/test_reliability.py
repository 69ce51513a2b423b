"""Fault injection, for real: interrupts at each stage, debugger trouble, the lab's own crash,
core-dump limits, concurrency. After each test nothing of it may be left, none ptrace-stopped
(the autouse fixture in conftest.py scans /proc for every process of the session)."""

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PROGRAMS, REPO, SHORT_TIMEOUT, descendants, marked_processes

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="Linux /proc and ptrace"),
              pytest.mark.skipif(not shutil.which("gdb"), reason="gdb is not installed")]

LAB = [sys.executable, "-m", "lab"]


def _no_stopped_process_of_ours():
    stopped = [(pid, state, cmd) for pid, state, cmd in marked_processes() if state in "tT"]
    assert not stopped, f"left ptrace- or job-stopped: {stopped}"


def _read_stderr_until(proc, needle: str, deadline_s: float = SHORT_TIMEOUT) -> str:
    """Read the lab's progress lines until one contains ``needle`` (a handshake on a pipe)."""
    seen = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], end - time.monotonic())
        if not ready:
            break
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    pytest.fail(f"the lab never printed {needle!r}; it printed:\n{''.join(seen)}")


def _wait_traced(pid_of_lab: int, deadline_s: float = SHORT_TIMEOUT) -> int:
    """Wait until a descendant of the lab has a tracer (gdb attached); return its PID."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for pid in descendants(pid_of_lab):
            try:
                with open(f"/proc/{pid}/status") as handle:
                    fields = dict(line.split(":", 1) for line in handle if ":" in line)
            except (FileNotFoundError, ProcessLookupError):
                continue
            tracer = int(fields.get("TracerPid", "0").strip())
            if tracer and "gdb" not in fields.get("Name", ""):
                return pid
        time.sleep(0.005)  # polling /proc for a state, with a deadline
    pytest.fail("gdb never attached to a descendant of the lab")


def _evidence(out: Path) -> dict:
    [path] = out.glob("*/evidence.json")
    return json.loads(path.read_text())


# -- interrupts at every stage -----------------------------------------------------------------

@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["signal=SIGINT", "signal=SIGTERM"])
@pytest.mark.parametrize("stage", ["before-fork", "gdb-attached"])
def test_lab_run_interrupted_at_a_stage_leaves_nothing(reaper, tmp_path, stage, sig, status):
    # GIVEN lab run of the ChromaDB scenario with GDB
    lab = reaper.popen([*LAB, "run", "chromadb-tokio", "--debugger", "gdb", "--out",
                        str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if stage == "before-fork":
        # the launch line is printed before the scenario imports ChromaDB and forks
        _read_stderr_until(lab, "] launch")
    else:
        _wait_traced(lab.pid)
    # WHEN it gets the signal at that stage
    lab.send_signal(sig)
    _, err = lab.communicate(timeout=SHORT_TIMEOUT)
    # THEN exit 128+N, one error line, evidence valid and "interrupted", nothing stopped
    assert lab.returncode == status, err
    assert "Traceback" not in err and "lab: error: interrupted" in err
    evidence = _evidence(tmp_path)
    assert evidence["verdict"] == "interrupted" and evidence["complete"]
    if stage == "before-fork":
        assert evidence["parent"]["threads_at_fork"] == []
    _no_stopped_process_of_ours()


def test_make_demo_gdb_interrupted_like_ctrl_c(reaper, tmp_path):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    # GIVEN make demo-gdb in its own session, as a terminal's foreground job
    make = reaper.popen(["make", "-s", "demo-gdb", f"CRASH_DUMPS={tmp_path}"], cwd=REPO,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        start_new_session=True)
    _wait_traced(make.pid, deadline_s=120)  # the first run may create .venv
    # WHEN Ctrl-C: SIGINT to the whole foreground process group
    os.killpg(make.pid, signal.SIGINT)
    _, err = make.communicate(timeout=SHORT_TIMEOUT)
    # THEN make fails, the lab left interrupted evidence, and nothing is left
    assert make.returncode != 0
    assert "Traceback" not in err
    assert _evidence(tmp_path)["verdict"] == "interrupted"
    _no_stopped_process_of_ours()


# -- debugger trouble ------------------------------------------------------------------------

def _fake_gdb(tmp_path: Path, body: str) -> dict:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "gdb"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("body, needle", [
    ("exec cat >/dev/null", "did not answer"),  # reads its input, never answers
    ("echo 'gdb: crashed' >&2; exit 3", "gdb"),  # dies at once
], ids=["debugger=hangs", "debugger=crashes"])
def test_a_broken_debugger_is_bounded_and_the_verdict_kept(reaper, tmp_path, body, needle):
    env = _fake_gdb(tmp_path, body)
    out = tmp_path / "out"
    started = time.monotonic()
    result = reaper.lab("run", "python-lock-held", "--debugger", "gdb", "--debugger-timeout",
                        "3", "--out", str(out), env=env)
    assert time.monotonic() - started < 60
    assert result.returncode == 8, result.stderr  # DebuggerFailed
    assert result.stderr.count("lab: error:") == 1 and "Traceback" not in result.stderr
    assert needle in result.stderr
    evidence = _evidence(out)
    assert evidence["verdict"] == "deadlock" and evidence["debugger"]["error"]
    _no_stopped_process_of_ours()


def test_a_missing_debugger_names_the_package(reaper, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python3")
    env = {**os.environ, "PATH": str(bindir)}
    result = reaper.lab("run", "python-lock-held", "--debugger", "gdb", "--out",
                        str(tmp_path / "out"), env=env)
    assert result.returncode == 5, result.stderr
    assert "apt-get install gdb" in result.stderr and "Traceback" not in result.stderr
    assert _evidence(tmp_path / "out")["verdict"] == "deadlock"


def test_ptrace_refused_because_another_tracer_holds_the_target(reaper, tmp_path):
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    # GIVEN a deadlocked child already traced by strace (a process has one tracer at a time)
    result = reaper.lab("watch", "--debugger", "gdb", "--timeout", "30", "--out",
                        str(tmp_path), "--", "strace", "-f", "-o", os.devnull,
                        sys.executable, str(PROGRAMS / "lock_held_at_fork.py"))
    # THEN the attach is refused with the remedy, the verdict is kept, nothing is stopped
    assert result.returncode == 6, result.stderr
    assert "already traced" in result.stderr and "Traceback" not in result.stderr
    assert _evidence(tmp_path)["verdict"] == "deadlock"
    _no_stopped_process_of_ours()


@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is not installed")
def test_ptrace_refused_without_the_capability_names_the_remedy(reaper, tmp_path):
    # GIVEN the lab without CAP_SYS_PTRACE (dropped from its bounding set, as in a container
    # without cap_add) and a deadlocked child that made itself non-dumpable
    result = reaper.run(["setpriv", "--bounding-set", "-sys_ptrace", *LAB, "watch",
                         "--debugger", "gdb", "--timeout", "3", "--out", str(tmp_path), "--",
                         sys.executable, str(PROGRAMS / "undumpable_deadlock.py")], cwd=REPO)
    # THEN the attach is refused in one line that says how to allow it, evidence kept
    assert result.returncode == 6, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("lab: error:")]
    assert "Operation not permitted" in error
    assert "run as root" in error and "SYS_PTRACE" in error and "ptrace_scope" in error
    assert _evidence(tmp_path)["debugger"]["error"]
    _no_stopped_process_of_ours()


# -- the lab's own crash ---------------------------------------------------------------------

CRASHING_LAB = """
import sys
from lab.process.tree import ProcessTree
from lab.watch.watcher import Watcher

def boom(self, session, outcome):
    raise RuntimeError("injected fault in the verdict stage")

Watcher.judge = boom
if sys.argv[1] == "no-cleanup":
    ProcessTree.stop = lambda self: None  # the cleanup itself is broken too
from lab.cli import main
sys.exit(main(["watch", "--debugger", "none", "--timeout", "30", "--out", sys.argv[2], "--",
               sys.executable, sys.argv[3]]))
"""


@pytest.mark.parametrize("mode", ["cleanup", "no-cleanup"],
                         ids=["backstop=cleanup", "backstop=atexit"])
def test_an_exception_inside_the_lab_still_reaps_the_tree(reaper, tmp_path, mode):
    result = reaper.run([sys.executable, "-c", CRASHING_LAB, mode, str(tmp_path),
                         str(PROGRAMS / "lock_held_at_fork.py")], cwd=REPO)
    assert result.returncode == 70, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("lab: [")]
    assert errors == [line for line in errors if line.startswith("lab: internal error:")]
    assert len(errors) == 1 and "RuntimeError" in errors[0]
    evidence = _evidence(tmp_path)  # valid JSON: never half-written
    assert "injected fault" in evidence["error"]
    assert not list(tmp_path.glob("*/*.tmp*"))
    assert not marked_processes(), "the atexit backstop must kill what the cleanup missed"


# -- core dumps ------------------------------------------------------------------------------

def test_gcore_refuses_a_terabyte_reservation_without_writing(reaper, tmp_path):
    result = reaper.lab("watch", "--debugger", "none", "--gcore", "--json", "--timeout", "30",
                        "--out", str(tmp_path), "--", sys.executable,
                        str(PROGRAMS / "huge_reservation_deadlock.py"))
    evidence = json.loads(result.stdout)
    assert evidence["verdict"] == "deadlock"
    assert evidence["core"]["estimated_bytes"] >= 1 << 40
    assert "above --gcore-limit" in evidence["core"]["skipped"]
    written = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert written < 10 * 2**20


def test_gcore_writes_a_small_core_within_its_estimate(reaper, tmp_path):
    if not shutil.which("gcore"):
        pytest.skip("gcore is not installed")
    result = reaper.lab("watch", "--debugger", "none", "--gcore", "--gcore-limit", "512",
                        "--json", "--timeout", "30", "--out", str(tmp_path), "--",
                        sys.executable, str(PROGRAMS / "lock_held_at_fork.py"))
    core = json.loads(result.stdout)["core"]
    path = Path(json.loads(result.stdout)["evidence_dir"]) / core["file"]
    try:
        assert 0 < core["bytes"] <= core["estimated_bytes"]
        assert path.stat().st_size == core["bytes"]
        assert path.read_bytes()[:4] == b"\x7fELF"
    finally:
        path.unlink(missing_ok=True)
    _no_stopped_process_of_ours()


# -- bad input and concurrency ---------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["run", "python-lock-held", "--trials", "0"], "--trials"),
    (["run", "python-lock-held", "--gcore-limit", "-5"], "--gcore-limit"),
    (["run", "python-lock-held", "--debugger-timeout", "0"], "--debugger-timeout"),
    (["run", "python-lock-held", "--launcher", "nope"], "nope"),
    (["watch", "--debugger", "lldb9", "--", "true"], "lldb9"),
], ids=["trials=0", "gcore-limit<0", "debugger-timeout=0", "launcher=unknown",
        "debugger=unknown"])
def test_bad_input_is_one_line(reaper, args, needle):
    result = reaper.lab(*args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # argparse: usage + the error


def test_two_runs_at_once_do_not_collide(reaper, tmp_path):
    runs = [reaper.popen([*LAB, "run", "python-lock-held", "--debugger", "none", "--json",
                          "--quiet", "--out", str(tmp_path)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    documents = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        documents.append(json.loads(out))
    assert documents[0]["run_id"] != documents[1]["run_id"]
    assert len(list(tmp_path.glob("*/evidence.json"))) == 2
    assert all(d["verdict"] == "deadlock" for d in documents)


# -- kill -9 of the lab --------------------------------------------------------------------

DAEMON_AND_WAIT = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        print(f"daemon {os.getpid()} is running", flush=True)
        time.sleep(3600)
    os._exit(0)
time.sleep(3600)
"""


def _registered(runs_dir: Path, deadline_s: float = SHORT_TIMEOUT) -> dict:
    """The one run registered in ``runs_dir``, once the lab has written it (with a deadline)."""
    end = time.monotonic() + deadline_s
    while not list(runs_dir.glob("*.json")):
        assert time.monotonic() < end, "the lab never registered its run"
        time.sleep(0.01)  # polling for a file the lab writes, with a deadline
    [entry] = runs_dir.glob("*.json")
    return json.loads(entry.read_text())


def test_kill_9_of_lab_watch_then_cleanup_stops_what_was_left(reaper, tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    env = {**os.environ, "LAB_RUNS_DIR": str(runs_dir)}
    # GIVEN lab watch of a root that sleeps and a daemon (setsid, double fork) that sleeps too
    lab = reaper.popen([*LAB, "watch", "--debugger", "none", "--timeout", "120", "--out",
                        str(out), "--", sys.executable, "-c", DAEMON_AND_WAIT], cwd=REPO, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = _read_stderr_until(lab, "  | daemon ").splitlines()[-1]  # the program's own line
    daemon = int(said.split("daemon ")[-1].split()[0])
    root = _registered(runs_dir)
    # WHEN the lab is killed with SIGKILL: no cleanup of its own can run
    lab.kill()
    lab.wait(timeout=SHORT_TIMEOUT)
    # THEN the daemon is still there, evidence.json says the run is unfinished ...
    assert os.path.exists(f"/proc/{daemon}")
    assert not _evidence(out)["complete"]
    # ... until `lab cleanup` stops it and marks the evidence interrupted, with the reason
    result = reaper.lab("cleanup", "--json", env=env, timeout=SHORT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    [done] = json.loads(result.stdout)
    assert done["run_id"] == root["run_id"] and daemon in done["stopped"]
    evidence = _evidence(out)
    assert evidence["verdict"] == "interrupted" and evidence["complete"]
    assert "lab cleanup" in evidence["error"] and str(lab.pid) in evidence["error"]
    assert not list(runs_dir.glob("*.json"))
    # AND a second cleanup finds nothing; the autouse fixture finds no process of ours
    again = reaper.lab("cleanup", "--json", env=env, timeout=SHORT_TIMEOUT)
    assert json.loads(again.stdout) == []


def test_kill_9_of_lab_run_before_the_fork_kills_the_root_and_cleanup_removes_temp_files(
        reaper, tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    env = {**os.environ, "LAB_RUNS_DIR": str(runs_dir)}
    # GIVEN lab run of the ChromaDB scenario, its host still importing ChromaDB
    lab = reaper.popen([*LAB, "run", "chromadb-tokio", "--debugger", "none", "--out", str(out)],
                       cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    _read_stderr_until(lab, "] launch")
    entry = _registered(runs_dir)
    assert entry["temp_dirs"] and all(os.path.isdir(d) for d in entry["temp_dirs"])
    host = next(p for p in descendants(lab.pid))
    # WHEN the lab is killed with SIGKILL
    lab.kill()
    lab.wait(timeout=SHORT_TIMEOUT)
    # THEN the host dies with it (PR_SET_PDEATHSIG), and cleanup removes the temp directories
    end = time.monotonic() + SHORT_TIMEOUT
    while os.path.exists(f"/proc/{host}/cmdline") and open(f"/proc/{host}/cmdline").read():
        assert time.monotonic() < end, "the scenario host outlived the killed lab"
        time.sleep(0.01)  # polling a process state, with a deadline
    result = reaper.lab("cleanup", env=env, timeout=SHORT_TIMEOUT)
    assert result.returncode == 0 and "marked interrupted" in result.stderr, result.stderr
    assert not any(os.path.exists(d) for d in entry["temp_dirs"])
    assert _evidence(out)["verdict"] == "interrupted"
