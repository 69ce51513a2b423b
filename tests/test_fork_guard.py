"""The fork guard (``pytest --fork-guard``, ``lab guard -- CMD``) on small real programs.

Each case is a real test file (or program) run by a real pytest in a child process: a lock
held by a thread, an idle thread, spawn, subprocess, a ChromaDB client before the fork, a
torch intra-op pool before the fork; the outcome and the message are asserted. Nothing hangs:
strict mode stops the fork, and warn mode's children exit at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import PROGRAMS, marked_processes, wait_until

HELD = """
import os, threading

lock = threading.Lock()
inside, never = threading.Event(), threading.Event()


def hold():
    with lock:
        inside.set()
        never.wait()


def test_forks_while_a_thread_holds_the_lock():
    threading.Thread(target=hold, name="holder", daemon=True).start()
    assert inside.wait(10)
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # in warn mode the fork happens: the child leaves at once
    os.waitpid(pid, 0)
"""

IDLE = """
import os, queue, threading

def test_forks_while_threads_wait_in_ways_that_release_their_locks():
    event, cond, jobs = threading.Event(), threading.Condition(), queue.Queue()
    def on_cond():
        with cond:
            cond.wait()
    for target in (event.wait, on_cond, jobs.get):
        threading.Thread(target=target, daemon=True).start()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
"""

SPAWN_AND_SUBPROCESS = """
import multiprocessing, subprocess, sys, threading

lock = threading.Lock()

def work():
    pass

def test_spawn_and_subprocess_start_fresh_programs():
    inside = threading.Event()
    def hold():
        with lock:
            inside.set()
            threading.Event().wait()
    threading.Thread(target=hold, daemon=True).start()
    inside.wait(10)
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    child = multiprocessing.get_context("spawn").Process(target=work)
    child.start()
    child.join(60)
    assert child.exitcode == 0
"""

REINIT = """
import os, threading


class Cache:
    def __init__(self):
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=lambda: setattr(self, "_lock", threading.Lock()))


def test_a_lock_the_program_recreates_in_the_child_is_not_flagged():
    cache, inside = Cache(), threading.Event()
    def hold():
        with cache._lock:
            inside.set()
            threading.Event().wait()
    threading.Thread(target=hold, daemon=True).start()
    inside.wait(10)
    pid = os.fork()
    if pid == 0:
        with cache._lock:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
"""

CHROMA = """
import hashlib, multiprocessing, os
import chromadb
from chromadb.api.types import EmbeddingFunction


class Local(EmbeddingFunction):
    def __init__(self):
        pass

    def __call__(self, texts):
        return [[b / 255 for b in hashlib.sha256(t.encode()).digest()[:8]] for t in texts]


def query():
    os._exit(0)


def test_a_pool_forked_after_the_client_is_made(tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path))
    docs = client.create_collection("docs", embedding_function=Local())
    docs.add(ids=["a"], documents=["alpha"])
    docs.query(query_texts=["alpha"], n_results=1)
    child = multiprocessing.get_context("fork").Process(target=query)
    child.start()
    child.join(30)
"""

TORCH = """
import multiprocessing, os
import torch


def work():
    os._exit(0)


def test_a_child_forked_after_torch_ran_in_parallel():
    torch.set_num_threads(4)
    torch.ones(512, 512) @ torch.ones(512, 512)  # the intra-op pool starts
    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join(30)
"""


LOGGING = """
import logging, os, threading

inside, never = threading.Event(), threading.Event()


class Slow(logging.Handler):
    def emit(self, record):
        inside.set()
        never.wait()  # inside logging's handler lock, which CPython re-creates in the child


def test_a_thread_inside_a_logging_handler_is_not_flagged():
    log = logging.getLogger("slow")
    log.addHandler(Slow())
    writer = threading.Thread(target=log.warning, args=("x",), daemon=True)
    writer.start()
    assert inside.wait(10)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    never.set()  # logging.shutdown() at exit takes the handler's lock: let the writer end
    writer.join(10)
"""


def run_pytest(tmp_path, source: str, *options: str, timeout: float = 120):
    test = tmp_path / "test_case.py"
    test.write_text(textwrap.dedent(source))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), str(test), *options], cwd=tmp_path,
                            capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    # multiprocessing's resource tracker (spawn) ends once the pytest that started it has
    wait_until(lambda: not [p for p in marked_processes() if "resource_tracker" in p[2]],
               "the resource tracker of the inner pytest has ended")
    return result


def test_strict_stops_the_fork_and_names_the_thread_the_line_and_the_fix(tmp_path):
    result = run_pytest(tmp_path, HELD, "--fork-guard")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "ForkSafetyError" in out and "fork() refused by the fork guard" in out
    assert "thread holder" in out and "`with lock:` at test_case.py:9" in out
    assert "os.register_at_fork(after_in_child=_fresh_lock_in_child)" in out
    assert "def _fresh_lock_in_child():" in out
    assert "1 failed" in out


def test_warn_lets_the_fork_happen_and_lists_it_in_the_summary(tmp_path):
    result = run_pytest(tmp_path, HELD, "--fork-guard=warn")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.split("fork guard", 1)[1]
    assert "test_case.py::test_forks_while_a_thread_holds_the_lock" in summary
    assert "thread holder" in summary and "fix: re-create lock in the child" in summary
    assert "1 risky fork(s), 0 stopped (warn mode)" in summary


def test_off_unless_asked(tmp_path):
    result = run_pytest(tmp_path, HELD)
    assert result.returncode == 0 and "fork guard" not in result.stdout


@pytest.mark.parametrize("source", [IDLE, SPAWN_AND_SUBPROCESS, REINIT, LOGGING],
                         ids=["idle waits", "spawn and subprocess", "re-created in the child",
                              "logging's own lock"])
def test_safe_forks_pass_the_strict_guard_unchanged(tmp_path, source):
    result = run_pytest(tmp_path, source, "--fork-guard")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fork guard" not in result.stdout


def test_a_chromadb_client_before_the_fork_is_named_with_its_fix(tmp_path):
    pytest.importorskip("chromadb")
    result = run_pytest(tmp_path, CHROMA, "--fork-guard")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "native threads of chromadb_rust_bindings" in result.stdout
    assert "create the client after fork" in result.stdout


def test_a_torch_intra_op_pool_before_the_fork_is_named_with_its_fix(tmp_path):
    pytest.importorskip("torch")
    result = run_pytest(tmp_path, TORCH, "--fork-guard")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "native threads of" in result.stdout and "torch.set_num_threads(1)" in result.stdout


# -- lab guard -- CMD: any program, through the startup hook ----------------------------------

def test_lab_guard_names_a_risky_fork_as_it_happens_and_exits_with_its_status(reaper, tmp_path):
    # GIVEN a program whose child deadlocks on a lock a thread held at the fork
    result = reaper.lab("guard", "--debugger", "none", "--out", str(tmp_path), "--",
                        sys.executable, str(PROGRAMS / "lock_held_at_fork.py"))
    # THEN the fork is named before the child exists, and the run exits 19 (a risky fork)
    assert result.returncode == 19, result.stderr
    lines = result.stderr.splitlines()
    named = next(i for i, line in enumerate(lines) if "lab: guard: risky fork at "
                 "lock_held_at_fork.py:" in line)
    proven = next(i for i, line in enumerate(lines) if "] verdict   deadlock" in line)
    assert named < proven  # warned before the deadlock was even there
    assert any("thread holder" in line and "`with lock:`" in line for line in lines)
    (folder,) = tmp_path.iterdir()
    evidence = json.loads((folder / "evidence.json").read_text())
    (fork,) = evidence["risky_forks"]
    assert fork["stopped"] is False and fork["risks"][0]["lock"] == "lock"
    assert evidence["verdict"] == "deadlock"  # warn: the program ran as it would


def test_lab_guard_strict_stops_the_fork_in_the_program(reaper, tmp_path):
    result = reaper.lab("guard", "--strict", "--debugger", "none", "--out", str(tmp_path),
                        "--", sys.executable, str(PROGRAMS / "lock_held_at_fork.py"))
    assert result.returncode == 19, result.stderr
    (folder,) = tmp_path.iterdir()
    evidence = json.loads((folder / "evidence.json").read_text())
    assert [fork["stopped"] for fork in evidence["risky_forks"]] == [True]
    assert "ForkSafetyError" in (folder / "output.txt").read_text()
    assert evidence["verdict"] == "error"  # the program did not catch it; nothing hangs


def test_lab_guard_lets_a_safe_program_run_and_says_nothing(reaper, tmp_path):
    result = reaper.lab("guard", "--strict", "--debugger", "none", "--out", str(tmp_path),
                        "--", sys.executable, str(PROGRAMS / "pool_terminated_ok.py"))
    assert result.returncode == 0, result.stderr
    assert "lab: guard:" not in result.stderr
    (folder,) = tmp_path.iterdir()
    assert json.loads((folder / "evidence.json").read_text())["risky_forks"] == []
