"""`lab watch` of programs nobody wrote for the lab: threads and stacks at fork, crashes, fixes.

The lab's startup hook (lab/hook) rides on PYTHONPATH into every Python process of the tree.
Each test runs a small real program (tests/programs/) through `python -m lab watch`, and reads
the evidence it wrote; the parsers are also tested offline on recorded dumps (tests/data/).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, PROGRAMS, SHORT_TIMEOUT
from lab import faults, hook, locksite, render
from lab.evidence import PythonFrame, from_dict

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the watcher reads Linux /proc")

EXIT = {"ok": 0, "crash": 11, "deadlock": 12}
STARTUP_RUNS = 15  # interpreter starts per variant when the hook's cost is measured
# Only catches a hook that does real work at start-up (measured here: about 2 ms of ~45 ms).
STARTUP_OVERHEAD_LIMIT_S = 0.1


@pytest.fixture
def lab(reaper, tmp_path):
    reaper.tmp = tmp_path
    return reaper


def watch(lab, *argv, env=None, debugger="none"):
    """Run ``lab watch --json`` on ``argv``; the result and the evidence document."""
    result = lab.lab("watch", "--json", "--quiet", "--debugger", debugger, "--timeout", "60",
                     "--out", str(lab.tmp / "runs"), "--", *map(str, argv), env=env)
    assert result.stdout, result.stderr
    return result, json.loads(result.stdout)


def section(text: str, heading: str) -> str:
    """The body of a ``## heading`` section of a Markdown document ('' when absent)."""
    if f"## {heading}\n" not in text:
        return ""
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0].split("\nFiles: ", 1)[0]


def frames_of(thread: dict) -> list[tuple[str, int, str]]:
    return [(Path(f["file"]).name, f["line"], f["function"]) for f in thread["python_frames"]]


def compiler() -> str:
    found = shutil.which("cc") or shutil.which("gcc")
    if not found:
        pytest.skip("no C compiler")
    return found


# -- why: the threads at fork ----------------------------------------------------------------

def test_the_thread_inside_with_self_lock_at_the_fork_is_named_with_its_line(lab):
    # GIVEN a user's program: a thread holds its cache's lock while a multiprocessing (fork)
    # worker starts, and the worker needs that lock
    program = PROGRAMS / "app_lock_at_fork.py"
    # WHEN it runs under `lab watch`
    result, evidence = watch(lab, sys.executable, program)
    assert evidence["verdict"] == "deadlock", result.stderr
    assert result.returncode == EXIT["deadlock"]
    # THEN the parent reported itself at the fork, and the child was made by multiprocessing
    parent = evidence["parent"]
    assert parent["source"] == "hook" and evidence["hook"]["active"]
    assert parent["start_method"] == "fork (multiprocessing.Process)"
    [dead] = [p for p in evidence["processes"] if p["verdict"] == "deadlock"]
    assert dead["pid"] in parent["children"]
    # AND the culprit is the refresher, inside `with self._lock:` at line 22, waiting at 24
    culprit = parent["culprit"]
    assert culprit["name"] == "refresher" and culprit["statement"] == "with self._lock:"
    assert (Path(culprit["file"]).name, culprit["line"], culprit["at"]) == \
        ("app_lock_at_fork.py", 22, 24)
    [refresher] = parent["threads_at_fork"]
    assert ("app_lock_at_fork.py", 24, "refresh") in frames_of(refresher)
    assert refresher["tid"] == culprit["tid"] and refresher["holds"]["lock"] == "self._lock"
    # AND the forking thread's stack is where the worker was started
    assert ("app_lock_at_fork.py", 40, "main") in frames_of(parent["forking_thread"])
    # AND summary.md says how to fix it, with no word of a library the program never loaded
    run_dir = Path(evidence["evidence_dir"])
    summary = (run_dir / "summary.md").read_text()
    how = section(summary, "How to fix")
    assert "Re-create `self._lock` in the child" in how and "register_at_fork" in how
    assert "forkserver" in how and "Measured:" in how
    assert "chroma" not in how.lower() and "openmp" not in how.lower()
    assert "**The culprit:** thread `refresher`" in summary
    # AND report.md says the same
    report = lab.lab("report", str(run_dir), timeout=SHORT_TIMEOUT)
    assert report.returncode == 0, report.stderr
    assert section((run_dir / "report.md").read_text(), "How to fix") == how


def test_the_parents_python_stacks_at_the_verdict_are_read_without_pausing_it(lab):
    from lab.stacks import pyspy

    if pyspy.find() is None:
        pytest.skip("py-spy is not installed")
    # GIVEN the deadlocked worker of a parent that waits for it in join()
    result, evidence = watch(lab, sys.executable, PROGRAMS / "app_lock_at_fork.py")
    parent = evidence["parent"]
    if not parent["threads_at_verdict"]:
        pytest.skip(f"py-spy could not read the parent here: {parent['at_verdict']}")
    # THEN its main thread is in join() at line 41 and the refresher still waits at line 24
    assert "nonblocking" in parent["at_verdict"]
    stacks = {t["name"]: frames_of(t) for t in parent["threads_at_verdict"]}
    assert ("app_lock_at_fork.py", 41, "main") in stacks["MainThread"]
    assert any(frame[:2] == ("app_lock_at_fork.py", 24) for frame in stacks["refresher"])


def test_the_childs_own_stack_ties_its_wait_to_the_inherited_lock(lab):
    if not shutil.which("gdb"):
        pytest.skip("gdb is not installed")
    # GIVEN the deadlocked worker, captured by the debugger
    result, evidence = watch(lab, sys.executable, PROGRAMS / "app_lock_at_fork.py",
                             debugger="gdb")
    assert evidence["verdict"] == "deadlock", result.stderr
    if not any(t["python_frames"] for t in (evidence["debugger"] or {}).get("threads", [])):
        pytest.skip(f"no Python frames from the debugger here: {evidence['debugger']}")
    # THEN "How to fix" says where the child waits: `with self._lock:` in get, line 27
    how = section((Path(evidence["evidence_dir"]) / "summary.md").read_text(), "How to fix")
    assert ("The child waits at `app_lock_at_fork.py:27` (`with self._lock:`), on a lock of "
            "the same name") in how


def test_a_glibc_mutex_owner_is_named_and_its_python_stack_at_the_fork_shown(lab):
    compiler()
    # GIVEN a Python thread that locked a pthread mutex through C when the main thread forked
    result, evidence = watch(lab, sys.executable, PROGRAMS / "python_thread_holds_mutex.py")
    assert evidence["verdict"] == "deadlock", result.stderr
    # THEN the owner the forensics read from the child's memory is that thread, by name
    [finding] = [f for f in evidence["forensics"] if f.get("owner_tid")]
    assert finding["owner_name"].startswith("mutex-holder") and finding["orphaned"]
    assert finding["owner_seen_by"] == "hook"
    # AND its Python stack at the fork says where it waited holding the mutex
    owner_frames = [(Path(f["file"]).name, f["line"]) for f in finding["owner_python_frames"]]
    assert owner_frames[0] == ("python_thread_holds_mutex.py", 26)
    assert evidence["parent"]["culprit"]["tid"] == finding["owner_tid"]
    assert "The owner's Python stack at the fork" in \
        (Path(evidence["evidence_dir"]) / "summary.md").read_text()


def test_a_parent_that_is_not_python_is_seen_through_proc_at_the_fork(lab):
    # GIVEN a C program whose thread "holder" locks a mutex before main forks
    binary = lab.tmp / "fork_with_holder"
    subprocess.run([compiler(), "-O1", "-pthread", "-o", str(binary),
                    str(PROGRAMS / "fork_with_holder.c")], check=True, timeout=SHORT_TIMEOUT)
    # WHEN it is watched
    result, evidence = watch(lab, binary)
    assert evidence["verdict"] == "deadlock", result.stderr
    # THEN its threads at the fork come from /proc: the holder is there, named
    parent = evidence["parent"]
    assert parent["source"] == "proc" and parent["pid"] == evidence["processes"][0]["pid"]
    [holder] = parent["threads_at_fork"]
    assert holder["name"] == "holder" and holder["python_frames"] == []
    assert parent["forking_thread"]["name"] == "fork_with_holde"  # comm: 15 bytes
    assert parent["forking_tid"] == parent["pid"]  # main: the task whose child it is
    # AND the mutex's owner, read from the child's memory, is that thread
    [finding] = [f for f in evidence["forensics"] if f.get("owner_tid")]
    assert finding["owner_tid"] == holder["tid"] and finding["owner_name"].startswith("holder")
    assert parent["culprit"]["tid"] == holder["tid"]
    # AND the fix offered is for a C program, not Python's multiprocessing
    how = section((Path(evidence["evidence_dir"]) / "summary.md").read_text(), "How to fix")
    assert "pthread_atfork" in how and "multiprocessing" not in how


def test_a_shell_between_the_lab_and_python_still_passes_the_hook_on(lab):
    # GIVEN `sh -c` that forks the deadlocking Python program (not an exec: a command follows)
    program = PROGRAMS / "lock_held_at_fork.py"
    result, evidence = watch(lab, "sh", "-c", f'"{sys.executable}" "{program}"; exit $?')
    assert evidence["verdict"] == "deadlock", result.stderr
    # THEN the fork that matters is Python's, reported by the hook, with its culprit
    shell, python = evidence["processes"][:2]
    parent = evidence["parent"]
    assert parent["pid"] == python["pid"] and python["ppid"] == shell["pid"]
    assert parent["source"] == "hook" and parent["culprit"]["name"] == "holder"
    assert parent["culprit"]["line"] == 19 and parent["culprit"]["statement"] == "with lock:"


def test_LAB_NO_FORK_HOOK_leaves_python_alone_and_proc_still_lists_the_threads(lab):
    # GIVEN the hook turned off
    env = {**os.environ, hook.DISABLE_VAR: "1"}
    result, evidence = watch(lab, sys.executable, PROGRAMS / "lock_held_at_fork.py", env=env)
    assert evidence["verdict"] == "deadlock", result.stderr
    # THEN nothing of the hook reached the program
    assert evidence["hook"]["active"] is False and evidence["hook"]["why_not"]
    assert str(hook.STARTUP_DIR) not in evidence["environment"].get("PYTHONPATH", "")
    assert hook.FAULT_DIR_VAR not in evidence["environment"]
    # AND the parent's threads still come from /proc, without Python names or stacks
    parent = evidence["parent"]
    assert parent["source"] == "proc" and len(parent["threads_at_fork"]) == 1
    [thread] = parent["threads_at_fork"]
    assert thread["python_frames"] == [] and "/proc only" in thread["library"]


def test_a_report_longer_than_pipe_buf_arrives_whole(lab):
    # GIVEN 40 threads at a fork: a report of about 6 KiB, longer than an atomic pipe write
    result, evidence = watch(lab, sys.executable, PROGRAMS / "many_threads_fork.py")
    assert evidence["verdict"] == "ok" and result.returncode == 0, result.stderr
    # THEN all 40 are listed, by their Python names
    [fork] = evidence["forks"]
    names = sorted(t["python_name"] for t in fork["threads_at_fork"])
    assert names == [f"idle-{n:02d}" for n in range(40)]


def test_forged_and_broken_reports_are_ignored(lab):
    # GIVEN a program that writes reports about PID 1, of wrong types, not JSON, a spooled
    # name outside the channel's directory
    result, evidence = watch(lab, sys.executable, PROGRAMS / "forged_reports.py")
    # THEN the run is ok, and nothing forged reached the evidence
    assert evidence["verdict"] == "ok" and result.returncode == 0, result.stderr
    assert evidence["forks"] == [] and evidence["parent"]["pid"] is None
    assert evidence["warnings"] == [] and evidence["complete"]
    assert evidence["hook"]["reports_dropped"] >= 2  # PID 1's fork, finding, warning
    assert "sent 8 reports" in (Path(evidence["evidence_dir"]) / "output.txt").read_text()


# -- the hook changes nothing the program can see -----------------------------------------------

def _introspect(output: str) -> dict:
    [line] = [line for line in output.splitlines() if "INTROSPECT " in line]
    return json.loads(line.split("INTROSPECT ", 1)[1])


def test_the_hook_changes_nothing_the_program_can_see(lab):
    program = PROGRAMS / "introspect.py"
    # GIVEN what the program sees of itself when it runs alone
    bare = lab.run([sys.executable, str(program)], timeout=SHORT_TIMEOUT)
    assert bare.returncode == 0, bare.stderr
    # WHEN it runs under the lab, with the hook
    result, evidence = watch(lab, sys.executable, program)
    assert evidence["verdict"] == "ok" and evidence["hook"]["active"], result.stderr
    watched = (Path(evidence["evidence_dir"]) / "output.txt").read_text()
    # THEN its threads, signal handlers and its child's exit status are the same
    assert _introspect(watched) == _introspect(bare.stdout)
    assert "Exception ignored" not in watched and "Traceback" not in watched


def test_the_programs_own_sitecustomize_still_runs(lab):
    # GIVEN a program whose own sitecustomize is on its PYTHONPATH
    env = {**os.environ, "PYTHONPATH": str(PROGRAMS / "own_site")}
    # WHEN it is watched
    result, evidence = watch(lab, sys.executable, PROGRAMS / "uses_own_sitecustomize.py",
                             env=env)
    assert evidence["verdict"] == "ok" and result.returncode == 0, result.stderr
    # THEN its sitecustomize ran, and the lab's hook too (it reported the fork)
    output = (Path(evidence["evidence_dir"]) / "output.txt").read_text()
    assert "own sitecustomize ran; OWN_SITECUSTOMIZE=1; lab hook loaded: True" in output
    assert evidence["environment"]["PYTHONPATH"].endswith(str(PROGRAMS / "own_site"))
    [fork] = evidence["forks"]
    assert [t["python_name"] for t in fork["threads_at_fork"]] == ["waiter"]


def test_the_hooks_cost_at_python_start_up(lab, tmp_path, measure):
    # GIVEN the environment a watched Python process gets, and one without the hook
    fifo = tmp_path / "reports"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a lab that listens
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    hooked = {**bare, **hook.environment(bare, tmp_path), "LAB_REPORT_FIFO": str(fifo)}

    def start(env) -> float:
        began = time.perf_counter()
        lab.run([sys.executable, "-c", "pass"], env=env, timeout=SHORT_TIMEOUT)
        return time.perf_counter() - began

    try:
        start(bare), start(hooked)  # warm the page cache
        pairs = [(start(bare), start(hooked)) for _ in range(STARTUP_RUNS)]
    finally:
        os.close(reader)
    # WHEN the medians are compared (the runs alternate)
    bare_s = statistics.median(b for b, _ in pairs)
    hooked_s = statistics.median(h for _, h in pairs)
    measure(f"python -c pass, median of {STARTUP_RUNS}, without the hook", bare_s)
    measure(f"python -c pass, median of {STARTUP_RUNS}, with the hook", hooked_s)
    # THEN the hook costs little at start-up (it does its work at a fork, not before)
    assert hooked_s - bare_s < STARTUP_OVERHEAD_LIMIT_S


# -- crashes get a stack ----------------------------------------------------------------------

def test_a_crash_in_a_c_call_names_the_function_and_line(lab):
    # GIVEN a forked child that hands C a NULL pointer in resize_image; its parent exits 0
    result, evidence = watch(lab, sys.executable, PROGRAMS / "crash_in_c_call.py")
    assert evidence["verdict"] == "crash" and result.returncode == EXIT["crash"]
    # THEN the crashed child's evidence holds faulthandler's stack, the crashing thread first
    parent, child = evidence["processes"][:2]
    assert parent["fault"] is None and child["signal"] == "SIGSEGV"
    fault = child["fault"]
    assert fault["error"] == "Segmentation fault"
    [current] = [t for t in fault["threads"] if t["current"]]
    assert frames_of(current)[:3] == [("__init__.py", frames_of(current)[0][1], "string_at"),
                                      ("crash_in_c_call.py", 15, "resize_image"),
                                      ("crash_in_c_call.py", 21, "main")]
    # AND the dump is in the run directory, private, and only the child's
    run_dir = Path(evidence["evidence_dir"])
    dump = run_dir / fault["file"]
    assert dump.name == f"fault-{child['pid']}.txt" and dump.stat().st_mode & 0o777 == 0o600
    # AND summary.md is headed by where it crashed, not by a thread state
    summary = (run_dir / "summary.md").read_text().splitlines()
    assert summary[2] == (f"PID {child['pid']} crashed with SIGSEGV in `resize_image` "
                          "(crash_in_c_call.py:15).")
    assert "blocked in" not in "\n".join(summary)


def test_a_faulthandler_the_user_set_is_left_to_the_user(lab):
    # GIVEN PYTHONFAULTHANDLER set by the user: tracebacks on the program's own stderr
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    result, evidence = watch(lab, sys.executable, PROGRAMS / "crash_in_c_call.py", env=env)
    assert evidence["verdict"] == "crash", result.stderr
    # THEN the lab wrote no dump of its own, and the user's went where the user asked
    assert all(p["fault"] is None for p in evidence["processes"])
    assert "left to the program" in evidence["hook"]["faulthandler"]
    output = (Path(evidence["evidence_dir"]) / "output.txt").read_text()
    assert "Fatal Python error: Segmentation fault" in output and "resize_image" in output


# -- offline: the parsers on recorded output ----------------------------------------------------

@pytest.mark.parametrize("name, error, innermost", [
    ("faulthandler-segv-two-threads-py3.11.txt", "Segmentation fault", ("string_at", 519)),
    ("faulthandler-segv-two-threads-py3.13.txt", "Segmentation fault", ("string_at", 538)),
    ("faulthandler-abort-py3.11-debian.txt", "Aborted", ("<module>", 15)),
], ids=["segv-py3.11", "segv-py3.13", "abort-py3.11-debian"])
def test_faulthandler_dumps_parse_to_threads_and_frames(name, error, innermost):
    fault = faults.parse((DATA / name).read_text())
    assert fault.error == error and len(fault.threads) == 2
    other, current = fault.threads
    assert current.current and not other.current and other.ident.startswith("0x")
    assert (current.python_frames[0].function, current.python_frames[0].line) == innermost
    assert [f.function for f in other.python_frames][2] == "idle"


def test_the_frame_a_crash_is_told_by_is_the_programs_not_the_stdlibs():
    fault = faults.parse((DATA / "faulthandler-segv-two-threads-py3.11.txt").read_text())
    frame = faults.where(fault)
    assert (Path(frame.file).name, frame.line, frame.function) == \
        ("mkdump.py", 11, "resize_image")


def test_a_reused_pid_keeps_the_last_dump():
    first = (DATA / "faulthandler-abort-py3.11-debian.txt").read_text()
    second = (DATA / "faulthandler-segv-two-threads-py3.11.txt").read_text()
    assert faults.parse(first + "\n" + second).error == "Segmentation fault"
    assert faults.parse("no dump here\n") is None


@pytest.mark.parametrize("line, lock", [
    (10, "lock"), (15, None), (21, "lock"), (29, None), (35, None), (41, None),
], ids=["with-lock", "condition-wait-releases", "acquire-before", "acquire-then-release",
        "def-inside-with", "with-open-is-no-lock"])
def test_which_lock_a_frame_held_is_told_from_the_source(line, lock):
    frame = PythonFrame(file=str(DATA / "locksite_cases.py"), line=line, function="f")
    held = locksite.held([frame])
    assert (held or {}).get("lock") == lock


def test_stdlib_frames_are_never_the_holder():
    frame = PythonFrame(file="/usr/lib/python3.11/threading.py", line=327, function="wait")
    assert locksite.held([frame]) is None
    assert not locksite.is_stdlib("/venv/lib/python3.11/site-packages/chromadb/api.py")


def test_the_hooks_constants_match_the_labs():
    text = (hook.STARTUP_DIR / "_lab_fork_hook.py").read_text()
    from lab import reports

    assert f'FAULT_DIR_VAR = "{hook.FAULT_DIR_VAR}"' in text
    assert f'REPORT_VAR = "{reports.ENV_VAR}"' in text


def test_how_to_fix_round_trips_through_the_evidence_document(lab):
    # GIVEN the evidence of a recorded user deadlock, read back from its JSON
    result, evidence = watch(lab, sys.executable, PROGRAMS / "app_lock_at_fork.py")
    rebuilt = from_dict(evidence)
    # THEN the section rendered from it is the one summary.md has
    how = "\n".join(render.format_how_to_fix(rebuilt))
    summary = (Path(evidence["evidence_dir"]) / "summary.md").read_text()
    assert how.strip() and how.strip() in summary
