"""``celery-chromadb`` as a catalog entry: its pools and fixes are its launchers.

The target is ``python -m lab.celery_lab.drive``: the driver, the Celery worker it starts and
every pool child are followed and judged like any other run. Before the evidence is finished,
what Celery reported (or that it had reported nothing yet) is added to it and to the run
directory: ``celery.txt`` for people, ``celery.json`` for tools, ``celery-worker.log`` (the
worker's log), and one ``detail`` line in the driver's process record.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lab import celery_lab, redact
from lab.errors import BadInput
from lab.evidence import Evidence
from lab.scenarios import CatalogEntry
from lab.target import REPO, Target

# A backstop only: a verdict normally ends the run long before. Worker start on busy cores,
# the task's hard time limit and the grace the driver gives Celery, then its shutdown deadlines.
TIMEOUT_MARGIN_S = 60.0
FIX_TEXT = {"worker-process-init": "create the client in a worker_process_init handler",
            "lazy": "create the client lazily, on first use in the pool child"}


def default_timeout() -> float:
    from lab.celery_lab import drive

    _, hard = celery_lab.time_limits()
    return (drive.STARTUP_TIMEOUT_S + hard + drive.RESULT_GRACE_S + drive.WARM_SHUTDOWN_S
            + drive.KILL_DEADLINE_S + TIMEOUT_MARGIN_S)


class CeleryScenario(CatalogEntry):
    name = celery_lab.SCENARIO
    summary = ("A Celery worker on an embedded broker runs a ChromaDB query task; "
               "`lab run celery-chromadb --pool P [--fix F]`.")
    requires = ("celery", "chromadb")
    fix = "create the client in worker_process_init, or lazily in the pool child"
    default_launcher = celery_lab.launcher_name("prefork", "none")
    any_interpreter = False  # the worker runs in the lab's own interpreter (see ``target``)

    def __init__(self):
        self.combos = {celery_lab.launcher_name(p, f): (p, f) for p, f in celery_lab.combinations()}
        self.expected = {name: celery_lab.expected(*pf) for name, pf in self.combos.items()}

    @property
    def default_timeout(self) -> float:
        return default_timeout()

    def missing(self, launcher: str | None = None) -> list[str]:
        pool, _ = self.combos.get(launcher or self.default_launcher, ("prefork", "none"))
        return celery_lab.missing(pool)

    def fixes(self, launcher: str) -> tuple[str | None, str | None]:
        _, fix = self.combos[launcher]
        return (None, None) if fix == "none" else (self.name, FIX_TEXT[fix])

    def launcher_for(self, pool: str | None, fix: str) -> str:
        pool = pool or "prefork"
        if pool not in celery_lab.POOLS:
            raise BadInput(f"unknown pool {pool!r}; pools: {', '.join(celery_lab.POOLS)}")
        if fix not in celery_lab.FIXES:
            raise BadInput(f"unknown fix {fix!r}; fixes: {', '.join(celery_lab.FIXES)}")
        if fix == "worker-process-init" and pool not in celery_lab.WORKER_PROCESS_INIT_POOLS:
            raise BadInput(f"fix {fix!r} needs pool prefork or solo: Celery never sends "
                           f"worker_process_init under {pool}")
        return celery_lab.launcher_name(pool, fix)

    def target(self, launcher: str, python: str | None = None) -> Target:
        self.check_launcher(launcher)
        if python is not None:
            raise BadInput(f"--python does not apply to {self.name}: the worker runs in the "
                           "lab's own interpreter")
        pool, fix = self.combos[launcher]
        missing = celery_lab.missing(pool)
        if missing:
            raise self.missing_error(missing, launcher)
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return Target(
            argv=[sys.executable, "-m", "lab.celery_lab.drive", "--pool", pool, "--fix", fix],
            label=f"{self.name}-{launcher}", env={celery_lab.ENV_FIX: fix, "PYTHONPATH": path},
            cwd=str(REPO), timeout=default_timeout(), scenario=self.name, launcher=launcher,
            expected=self.expected[launcher],
            side_channel=True,  # the worker's register_at_fork hook names the threads at fork
            scratch_env=celery_lab.ENV_DIR, annotate=add_celery_report)


CELERY = CeleryScenario()


def add_celery_report(session) -> None:
    """Write celery.json, celery.txt and celery-worker.log; time the verdict from the task's
    start; note what Celery reported in the driver's record. Runs before the final write."""
    scratch, folder, evidence = session.scratch, session.rundir.path, session.evidence
    if scratch is None:
        return  # never launched
    log = scratch / "worker.log"
    if log.exists():
        (folder / "celery-worker.log").write_text(redact.text(log.read_text(errors="replace")))
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
    if start is not None and session.verdict_at is not None:
        # CLOCK_MONOTONIC is one clock for every process on the machine.
        evidence.timings["task_to_verdict_s"] = round(session.verdict_at - start["t_ns"] / 1e9, 4)
        report["task_pid"] = start["pid"]
    if report["reported"] is None:
        report["reported"] = _silence(evidence, start, soft, hard)
    report["task_to_verdict_s"] = evidence.timings.get("task_to_verdict_s")
    (folder / "celery.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "celery.txt").write_text(_celery_text(evidence, report, events))
    root = session.tree.members.get(session.tree.root.pid) if session.tree.root else None
    if root is not None:
        root.record.detail = "; ".join(filter(None, [root.record.detail,
                                                     f"celery reported: {report['reported']}"]))


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
