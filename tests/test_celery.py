"""Celery on an embedded broker, for real: prefork deadlocks in the pool child, the others work.

Real ``celery worker`` processes (kombu's filesystem transport, a file result backend), a real
ChromaDB, the lab's watch around them. Each run is one trial: a reproduction is never retried.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHORT_TIMEOUT, descendants

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the Linux futex deadlock, read from /proc"),
    pytest.mark.skipif(importlib.util.find_spec("celery") is None,
                       reason="celery is not installed: pip install -e '.[celery]'"),
]

from lab import celery_lab  # noqa: E402 (after the skip marks: importing it needs no celery)


def celery_run(reaper, tmp_path, pool, fix="none"):
    """``python -m lab.celery_lab --pool P --fix F --json``; return (result, evidence, report)."""
    result = reaper.run([sys.executable, "-m", "lab.celery_lab", "--pool", pool, "--fix", fix,
                         "--json", "--quiet", "--debugger", "none", "--out", str(tmp_path)],
                        cwd=REPO)
    assert result.stdout, result.stderr
    evidence = json.loads(result.stdout)
    folder = Path(evidence["evidence_dir"])
    report = json.loads((folder / "celery.json").read_text())
    return result, evidence, report


def process(evidence, pid):
    [record] = [p for p in evidence["processes"] if p["pid"] == pid]
    return record


def is_celery_worker(record):
    return record["argv"][1:6] == ["-m", "celery", "-A", "lab.celery_lab.app", "worker"]


@pytest.mark.slow
def test_prefork_pool_child_is_proven_deadlocked(reaper, tmp_path, measure):
    # GIVEN the field's code: a ChromaDB client made at import in the worker's main process
    # WHEN a prefork worker runs the query task
    result, evidence, report = celery_run(reaper, tmp_path, "prefork")
    # THEN the lab proves a deadlock, as expected, in the pool child of the worker main process
    assert result.returncode == 0, result.stderr
    assert (evidence["scenario"], evidence["launcher"]) == ("celery-chromadb", "celery-prefork")
    assert evidence["expected"] == evidence["verdict"] == "deadlock"
    [dead] = [p for p in evidence["processes"] if p["verdict"] == "deadlock"]
    main = process(evidence, dead["ppid"])
    assert is_celery_worker(dead) and is_celery_worker(main)
    assert main["ppid"] == evidence["processes"][0]["pid"]  # the driver started the worker
    assert report["task_pid"] == dead["pid"]  # the task ran there
    for thread in dead["threads"]:
        assert thread["syscall"]["name"] == "futex"
        assert thread["syscall"]["futex"]["timeout"] is None
    # AND the worker main process forked it while ChromaDB's Rust threads ran
    assert evidence["parent"]["pid"] == main["pid"]
    lost = {t["name"] for t in evidence["parent"]["threads_at_fork"]}
    assert {"tokio-rt-worker", "sqlx-sqlite-wor"} <= lost
    # AND the lab knew long before Celery's own soft time limit could have said anything
    knew = evidence["timings"]["task_to_verdict_s"]
    assert knew < report["soft_time_limit_s"]
    assert report["reported"].startswith("nothing")
    assert "celery reported: nothing" in (Path(evidence["evidence_dir"]) / "celery.txt").read_text()
    measure("celery prefork: task start -> proven deadlock in the pool child", knew)
    measure("celery prefork: worker launch -> proven deadlock", evidence["detect_s"])


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["solo", "threads"], ids=lambda p: f"pool={p}, fix=none")
def test_pools_without_fork_return_the_right_result(reaper, tmp_path, pool, measure):
    # GIVEN the same task module (client made at import), WHEN a pool that does not fork runs it
    result, evidence, report = celery_run(reaper, tmp_path, pool)
    # THEN every process exits 0 and Celery returns the right nearest neighbour
    assert result.returncode == 0, result.stderr
    assert evidence["expected"] == evidence["verdict"] == "ok"
    assert report["state"] == "SUCCESS"
    assert report["result"]["ids"] == [celery_lab.QUERY_ID]
    # AND the query ran in the worker's main process, the one that made the client
    worker = process(evidence, report["worker_pid"])
    tree = [(p["pid"], p["ppid"], p["argv"][1:4], p["exit_code"], p["detail"])
            for p in evidence["processes"]]
    assert is_celery_worker(worker) and worker["exit_code"] == 0, tree
    assert report["result"]["pid"] == report["worker_pid"]
    measure(f"celery {pool}: task sent -> result", report["task_s"])


@pytest.mark.slow
def test_worker_process_init_fix_makes_prefork_work(reaper, tmp_path, measure):
    # GIVEN the client is made in a worker_process_init handler, WHEN prefork runs the task
    result, evidence, report = celery_run(reaper, tmp_path, "prefork", "worker-process-init")
    # THEN it is ok and right
    assert result.returncode == 0, result.stderr
    assert evidence["launcher"] == "celery-prefork-worker-process-init"
    assert evidence["expected"] == evidence["verdict"] == "ok"
    assert report["result"]["ids"] == [celery_lab.QUERY_ID]
    # AND the client was made in the pool child that ran the task, never in the main process
    clients = [e for e in report["events"] if e["event"] == "client"]
    assert [c["pid"] for c in clients] == [report["result"]["pid"]]
    assert clients[0]["ppid"] == report["worker_pid"]
    measure("celery prefork + worker_process_init: task sent -> result", report["task_s"])


@pytest.mark.slow
def test_standalone_driver_stops_and_reaps_its_worker_on_ctrl_c(reaper, tmp_path):
    # GIVEN the driver alone, its prefork pool child deadlocked in the query
    proc = reaper.popen([sys.executable, "-m", "lab.celery_lab.drive", "--pool", "prefork",
                         "--dir", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # a handshake: the driver says when the task started
        lines.append(line)
        if "task started in PID" in line:
            break
    else:
        pytest.fail("the driver ended before the task started:\n" + "".join(lines))
    tree = descendants(proc.pid)
    assert len(tree) >= 2, tree  # the worker and its pool child (at least)
    # WHEN Ctrl-C reaches the driver
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=SHORT_TIMEOUT)
    # THEN it stops the worker, reaps every process it started, and exits 128 + SIGINT
    assert proc.returncode == 128 + signal.SIGINT, "".join(lines) + rest
    assert "stopping worker" in rest
    assert not [pid for pid in tree if os.path.exists(f"/proc/{pid}")], rest


def test_expected_verdicts_and_launcher_names():
    assert celery_lab.expected("prefork", "none") == "deadlock"
    for pool, fix in celery_lab.combinations()[1:]:
        assert celery_lab.expected(pool, fix) == "ok", (pool, fix)
    assert celery_lab.launcher_name("threads", "none") == "celery-threads"
    assert celery_lab.launcher_name("prefork", "lazy") == "celery-prefork-lazy"


@pytest.mark.parametrize("pool, fix", [("nope", "none"), ("prefork", "nope"),
                                       ("threads", "worker-process-init")],
                         ids=["unknown pool", "unknown fix", "fix the pool never runs"])
def test_bad_pool_or_fix_is_bad_input(pool, fix, tmp_path):
    from lab.celery_lab.runner import run_celery
    from lab.errors import BadInput
    from lab.options import RunOptions

    with pytest.raises(BadInput):
        run_celery(pool, fix, RunOptions(out_base=tmp_path))
    assert not list(tmp_path.iterdir())  # refused before any run directory was made


def test_table_marks_a_mismatch_and_shows_a_skip():
    from lab.celery_lab.__main__ import table

    rows = [
        {"pool": "prefork", "fix": "none", "expected": "deadlock", "observed": "deadlock",
         "task_to_verdict_s": 0.14, "soft_time_limit_s": 10.0, "hard_time_limit_s": 20.0,
         "celery_reported": "nothing"},
        {"pool": "eventlet", "fix": "none", "expected": "ok", "observed": "skipped",
         "task_to_verdict_s": None, "soft_time_limit_s": 10.0, "hard_time_limit_s": 20.0,
         "celery_reported": "skipped: needs eventlet"},
        {"pool": "solo", "fix": "none", "expected": "ok", "observed": "error",
         "task_to_verdict_s": 5.0, "soft_time_limit_s": 10.0, "hard_time_limit_s": 20.0,
         "celery_reported": "FAILURE"},
    ]
    text = table(rows).splitlines()
    assert "0.14 s" in text[2] and "10/20 s" in text[2] and "MISMATCH" not in text[2]
    assert "skipped: needs eventlet" in text[3] and "MISMATCH" not in text[3]
    assert text[4].endswith("FAILURE  <-- MISMATCH")


def test_main_cli_runs_one_pool(reaper, tmp_path):
    # GIVEN `lab run celery-chromadb --pool prefork` (the command line)
    result = reaper.lab("run", "celery-chromadb", "--pool", "prefork", "--debugger", "none",
                        "--json", "--quiet", "--out", str(tmp_path))
    # THEN it exits 0 because the pool child's deadlock is the expected verdict
    assert result.returncode == 0, result.stderr
    evidence = json.loads(result.stdout)
    assert (evidence["launcher"], evidence["verdict"]) == ("celery-prefork", "deadlock")


@pytest.mark.parametrize("args, needle", [
    (["--pool", "nope"], "unknown pool"),
    (["--pool", "prefork", "--fix", "nope"], "nope"),
    (["--pool", "prefork", "--launcher", "fork"], "--launcher"),
], ids=["pool=unknown", "fix=unknown", "pool and launcher"])
def test_main_cli_bad_celery_input_is_one_line(reaper, args, needle):
    result = reaper.lab("run", "celery-chromadb", *args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
