"""``celery-chromadb``: one real Celery worker under the lab's watch, judged per pool and fix.

The watched command is ``python -m lab.celery_lab.drive``: the driver, the Celery worker it
starts and every pool child are followed and judged from /proc. Under prefork with the client
made at import, the pool child is proven deadlocked within a fraction of a second of the task
starting, long before Celery's own time limits would say anything. After the run, what Celery
reported (or that it had reported nothing yet) is added to the evidence directory:
``celery.txt`` for people, ``celery.json`` for tools, ``celery-worker.log`` (the worker's log),
and, in the driver's process record, one ``detail`` line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from lab import celery_lab, redact
from lab.errors import BadInput, LabError
from lab.evidence import Evidence
from lab.progress import Progress
from lab.rundir import new_run_id
from lab.watch.engine import Watch, WatchOptions

REPO = Path(__file__).resolve().parents[2]
# A backstop only: a verdict normally ends the run long before. Worker start on busy cores,
# the task's hard time limit and the grace the driver gives Celery, then its shutdown deadlines.
TIMEOUT_MARGIN_S = 60.0


def default_timeout() -> float:
    from lab.celery_lab import drive

    _, hard = celery_lab.time_limits()
    return (drive.STARTUP_TIMEOUT_S + hard + drive.RESULT_GRACE_S + drive.WARM_SHUTDOWN_S
            + drive.KILL_DEADLINE_S + TIMEOUT_MARGIN_S)


def check(pool: str, fix: str) -> None:
    """Raise BadInput for an unknown pool or fix, MissingPackage when a package is missing."""
    from lab.scenarios import MissingPackage

    if pool not in celery_lab.POOLS:
        raise BadInput(f"unknown pool {pool!r}; pools: {', '.join(celery_lab.POOLS)}")
    if fix not in celery_lab.FIXES:
        raise BadInput(f"unknown fix {fix!r}; fixes: {', '.join(celery_lab.FIXES)}")
    if fix == "worker-process-init" and pool not in celery_lab.WORKER_PROCESS_INIT_POOLS:
        raise BadInput(f"fix {fix!r} needs pool prefork or solo: Celery never sends "
                       f"worker_process_init under {pool}")
    missing = celery_lab.missing(pool)
    if missing:
        quoted = " ".join(f"'{m}'" for m in missing)
        raise MissingPackage(f"scenario {celery_lab.SCENARIO!r} with pool {pool!r} needs "
                             f"{', '.join(missing)}, not installed here", f"pip install {quoted}")


def run_celery(pool: str, fix: str = "none", *, debugger: str = "auto",
               timeout: float | None = None, out_base: Path = Path("crash_dumps"),
               progress: Progress | None = None, echo_output: bool = True) -> Evidence:
    """Run the Celery worker once under ``pool`` with ``fix``; return its evidence.

    Raises BadInput (unknown pool or fix), MissingPackage (celery, gevent or eventlet not
    installed), or any LabError of the watch; the evidence collected so far is then attached
    to the error, and what Celery reported is in the evidence directory all the same.
    """
    check(pool, fix)
    launcher = celery_lab.launcher_name(pool, fix)
    run_id = new_run_id(f"{celery_lab.SCENARIO}-{launcher}")
    scratch = Path(tempfile.mkdtemp(prefix=f"lab-{run_id}-"))
    env = {**os.environ, celery_lab.ENV_DIR: str(scratch), celery_lab.ENV_FIX: fix,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    options = WatchOptions(
        argv=[sys.executable, "-m", "lab.celery_lab.drive", "--pool", pool, "--fix", fix,
              "--dir", str(scratch)],
        timeout=timeout or default_timeout(),
        debugger=debugger,
        out_base=out_base,
        run_id=run_id,
        scenario=celery_lab.SCENARIO,
        launcher=launcher,
        expected=celery_lab.expected(pool, fix),
        side_channel=True,  # the worker's register_at_fork hook names the threads at fork
        env=env,
        cwd=str(REPO),
        echo_output=echo_output,
    )
    watch = None
    try:
        watch = Watch(options, progress)
        try:
            evidence = watch.run()
        except LabError as exc:
            if exc.evidence is not None:
                _add_celery_report(watch, exc.evidence, scratch)
            raise
        _add_celery_report(watch, evidence, scratch)
        return evidence
    finally:
        if watch is not None:
            _keep_worker_log(watch, scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def celery_report(evidence: Evidence | dict) -> dict:
    """Return the ``celery.json`` written next to ``evidence`` (empty when there is none)."""
    folder = evidence["evidence_dir"] if isinstance(evidence, dict) else evidence.evidence_dir
    try:
        return json.loads((Path(folder) / "celery.json").read_text())
    except (FileNotFoundError, TypeError, ValueError):
        return {}


# -- after the run ----------------------------------------------------------------------------

def _events(scratch: Path) -> list[dict]:
    events = []
    try:
        lines = (scratch / "events.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return events
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill
    return events


def _keep_worker_log(watch: Watch, scratch: Path) -> None:
    log = scratch / "worker.log"
    if log.exists():
        text = redact.text(log.read_text(errors="replace"))
        (watch.rundir.path / "celery-worker.log").write_text(text)


def _add_celery_report(watch: Watch, evidence: Evidence, scratch: Path) -> None:
    """Write celery.json and celery.txt, time the verdict from the task's start, note it all
    in the driver's record; then rewrite evidence.json and summary.md."""
    soft, hard = celery_lab.time_limits()
    report = {"pool": None, "fix": None, "state": None, "result": None, "reported": None,
              "log": []}
    driver_file = scratch / "celery.json"
    if driver_file.exists():
        report.update(json.loads(driver_file.read_text()))
    report.setdefault("soft_time_limit_s", soft)
    report.setdefault("hard_time_limit_s", hard)
    events = _events(scratch)
    report["events"] = events
    start = next((e for e in events if e["event"] == "task-start"), None)
    if start is not None and watch.verdict_at is not None:
        # CLOCK_MONOTONIC is one clock for every process on the machine.
        evidence.timings["task_to_verdict_s"] = round(watch.verdict_at - start["t_ns"] / 1e9, 4)
        report["task_pid"] = start["pid"]
    if report["reported"] is None:
        report["reported"] = _silence(evidence, start, soft, hard)
    report["task_to_verdict_s"] = evidence.timings.get("task_to_verdict_s")
    folder = watch.rundir.path
    (folder / "celery.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "celery.txt").write_text(_celery_text(evidence, report, events))
    root = evidence.processes[0] if evidence.processes else None
    if root is not None:
        root.detail = "; ".join(filter(None, [root.detail,
                                              f"celery reported: {report['reported']}"]))
    watch.rundir.write_evidence(evidence)
    watch.rundir.write_summary(evidence)


def _silence(evidence: Evidence, start: dict | None, soft: float, hard: float) -> str:
    """Celery's report when the lab ended the run first: nothing, and when it would have."""
    task = evidence.timings.get("task_to_verdict_s")
    if start is None:
        return "nothing (the task had not started when the run ended)"
    return (f"nothing: the lab ended the run {task:.2f} s after the task started; Celery's soft "
            f"time limit ({soft:g} s) would only log, its hard time limit ({hard:g} s) would "
            "SIGKILL the pool child")


def _celery_text(evidence: Evidence, report: dict, events: list[dict]) -> str:
    lines = [f"scenario {evidence.scenario}, launcher {evidence.launcher}: expected "
             f"{evidence.expected}, observed {evidence.verdict}",
             f"task time limits: soft {report['soft_time_limit_s']:g} s, hard "
             f"{report['hard_time_limit_s']:g} s",
             f"lab verdict: {evidence.verdict} {evidence.detect_s} s after launch"
             + (f", {report['task_to_verdict_s']} s after the task started"
                if report.get("task_to_verdict_s") is not None else ""),
             f"celery reported: {report['reported']}", "", "what the worker said it did:"]
    for event in events:
        what = {"client": lambda e: f"opened the ChromaDB client ({e['where']})",
                "pool-child": lambda e: "started as a pool child (worker_process_init)",
                "process-init": lambda e: "worker_process_init, in the main process (solo)",
                "ready": lambda e: "worker ready",
                "task-start": lambda e: f"task {e.get('task_id')} started"}.get(
                    event["event"], lambda e: e["event"])
        lines.append(f"  PID {event['pid']} (parent {event['ppid']}): {what(event)}")
    if report.get("log"):
        lines += ["", "the worker's log, as far as the task goes:"]
        lines += [f"  {line}" for line in report["log"]]
    return "\n".join(lines) + "\n"
