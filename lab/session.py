"""One run's lifecycle, owned once: run dir and evidence, report channel, output, processes, end.

A RunSession is what every way of observing a run shares. It creates the run directory and
seeds the evidence, launches the target (its environment, a scratch directory, the report
channel, the output tee, the ProcessTree), folds every report into the evidence, and — whatever
happens: a verdict, a timeout, the lab's own exception, SIGINT/SIGTERM — stops and reaps the
tree and writes the evidence atomically, complete, once. An *observer* (the watcher, the
catch) does the watching in between; ``run(observer)`` holds the two together.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lab import evidence as ev, process, redact, reports
from lab.envinfo import platform_info
from lab.errors import EvidenceNotWritten, Interrupted, LabError
from lab.options import RunOptions
from lab.output import OutputTee
from lab.process import runs
from lab.process.backend import RUN_ID_VAR
from lab.process.tree import ProcessTree
from lab.progress import Progress
from lab.reports import Event, ReportChannel
from lab.rundir import RunDir
from lab.target import Target
from lab.verdicts import Verdict, worst

OUTPUT_DRAIN_S = 2.0
OUTPUT_FILE = "output.txt"


class Observer:
    """Watches a launched session. ``run`` does the work; the hooks are optional."""

    def run(self, session: RunSession) -> None:
        raise NotImplementedError

    def release(self, session: RunSession) -> None:
        """Before the tree is stopped: let go of what holds a process (a debugger)."""

    def conclude(self, session: RunSession) -> None:
        """After the output is drained, before the final write: last facts for the evidence."""


class RunSession:
    def __init__(self, target: Target, options: RunOptions, progress: Progress | None = None):
        self.target = target
        self.options = options
        self.progress = progress or Progress()
        self.rundir = RunDir.create(options.out_base, options.run_id, target.label)
        self.evidence = ev.Evidence(
            run_id=self.rundir.run_id, command=redact.argv(list(target.argv)),
            platform=platform_info(), scenario=target.scenario, launcher=target.launcher,
            expected=target.expected, evidence_dir=str(self.rundir.path))
        if target.python_version:
            self.evidence.platform.python = target.python_version
        self.backend = process.backend()
        self.tree = ProcessTree(self.backend, self.rundir.run_id)
        self.tree.on_stop = lambda live: self.progress.stage(
            "cleanup", f"stopping {len(live)} process(es): {', '.join(map(str, sorted(live)))}")
        self.channel: ReportChannel | None = None
        self.reports: list[dict[str, Any]] = []  # every report, in arrival order
        self.findings: list[dict[str, Any]] = []  # finding and exception reports
        self.scratch: Path | None = None
        self.launched_at: float | None = None
        self.verdict_at: float | None = None
        self.pending_error: LabError | None = None  # raised once the evidence is complete
        self._output: threading.Thread | None = None
        self._tee: OutputTee | None = None
        self._registered: runs.RunEntry | None = None

    @property
    def timeout(self) -> float:
        return self.options.timeout or self.target.timeout

    # -- the whole run ---------------------------------------------------------------------

    def run(self, observer: Observer) -> ev.Evidence:
        """Run ``observer`` on this session; return the final evidence or raise a LabError
        (with the evidence attached). The tree is stopped and reaped either way."""
        try:
            observer.run(self)
        except Interrupted as exc:
            reached = self.evidence.verdict
            self.evidence.verdict = Verdict.INTERRUPTED.value
            self.evidence.error = str(exc) + (f" (after the verdict {reached})" if reached else "")
            self._end(observer)
            exc.evidence = self.evidence
            raise
        except BaseException as exc:
            if isinstance(exc, LabError):
                self.evidence.error = exc.line()
                exc.evidence = self.evidence
            else:
                self.evidence.error = f"lab error: {type(exc).__name__}: {exc}"
            self._end(observer)
            raise
        self._end(observer)
        if self.rundir.failed:
            error = EvidenceNotWritten(f"verdict {self.evidence.verdict}, but the evidence in "
                                       f"{self.rundir.path} is incomplete: {self.rundir.failed}")
            error.evidence = self.evidence
            raise error
        if self.pending_error is not None:
            self.pending_error.evidence = self.evidence
            raise self.pending_error
        return self.evidence

    def _end(self, observer: Observer) -> None:
        try:
            observer.release(self)
        finally:
            self.tree.stop()
            self._drain()
            observer.conclude(self)
            if self.target.annotate is not None:
                try:
                    self.target.annotate(self)
                except Exception as exc:  # the evidence is written all the same
                    self.progress.stage("evidence", f"the target's own facts were not added: "
                                        f"{type(exc).__name__}: {exc}")
            self.evidence.stages = list(self.progress.stages)
            self.evidence.complete = True
            self.write()
            self.rundir.write_summary(self.evidence)
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)
            if self._registered is not None:
                runs.unregister(self._registered)
            self.progress.stage("evidence", f"{self.rundir.path}/evidence.json")

    # -- launching -------------------------------------------------------------------------

    def launch(self, *, argv_prefix: list[str] | None = None,
               extra_env: dict[str, str] | None = None, note: str | None = None) -> None:
        """Start the target with the lab's environment; its output is teed to output.txt."""
        self.backend.open()
        if self.evidence.watch_mode is None:  # an observer may name its own (the catch does)
            self.evidence.watch_mode = self.backend.mode
            self.evidence.watch_note = self.backend.note
        env = {**os.environ, **self.target.env, **(extra_env or {}),
               RUN_ID_VAR: self.rundir.run_id}
        if self.target.scratch_env:
            self.scratch = Path(tempfile.mkdtemp(prefix=f"lab-{self.rundir.run_id}-"))
            env[self.target.scratch_env] = str(self.scratch)
        if self.target.side_channel:
            self.channel = ReportChannel(
                tempfile.mkdtemp(prefix=f"lab-{self.rundir.run_id}-report-"), owns_directory=True)
            env[reports.ENV_VAR] = self.channel.path
        self.evidence.environment = redact.environment(env)
        argv = [*(argv_prefix or []), *self.target.argv]
        self.write()
        self.progress.stage("launch", " ".join(redact.argv(argv)) + "  ["
                            + (note or f"watch mode: {self.evidence.watch_mode}") + "]")
        self.launched_at = time.monotonic()
        root = self.tree.spawn(argv, env=env, cwd=self.target.cwd)
        temp = [Path(self.channel.directory)] if self.channel else []
        self._registered = runs.register(self.rundir.run_id, self.rundir.path,
                                         temp + ([self.scratch] if self.scratch else []))
        self._tee = OutputTee(self.rundir.path / OUTPUT_FILE, self.options.echo_output)
        self._output = threading.Thread(target=self._tee.run, args=(root.stdout.fileno(),),
                                        daemon=True, name="lab-output")
        self._output.start()

    # -- reports ---------------------------------------------------------------------------

    def read_reports(self) -> list[dict[str, Any]]:
        """Fold the reports that arrived into the evidence; return them."""
        if self.channel is None:
            return []
        new = self.channel.read()
        for report in new:
            self.reports.append(report)
            kind = report["event"]
            if kind in (Event.FINDING, Event.EXCEPTION):
                self.findings.append(report)
            elif kind == Event.WARNING:
                self.evidence.warnings.append(report)
            elif kind == Event.FORK and self.evidence.parent.pid is None:
                self.evidence.parent = reports.parent_info(report)
                vanished = [t.name for t in self.evidence.parent.threads_at_fork]
                self.progress.stage("fork", f"PID {report['pid']} forked; threads the child "
                                    f"does not inherit: {', '.join(vanished) or 'none'}")
        return new

    def apply_findings(self) -> None:
        """Fold in what /proc cannot see: a scenario's own finding, a swallowed exception."""
        for finding in self.findings:
            member = self.tree.members.get(finding.get("pid"))
            if member is None:
                continue
            record = member.record
            if finding["event"] == Event.FINDING:
                verdict, detail = finding["verdict"], finding["detail"]
            elif record.verdict == Verdict.OK.value:
                verdict = Verdict.ERROR.value
                detail = (f"exited 0, but a worker's {finding['type']}: {finding['message']} "
                          "was delivered to a Future and never re-raised")
            else:
                continue
            record.verdict = worst([record.verdict or "ok", verdict]).value
            record.detail = f"{record.detail}; {detail}" if record.detail else detail

    # -- evidence --------------------------------------------------------------------------

    def write(self) -> None:
        """Write evidence.json now (atomically), with every process seen so far."""
        self.evidence.processes = self.tree.records
        self.rundir.write_evidence(self.evidence)

    def _drain(self) -> None:
        """The output until EOF (bounded), then the last reports; close both."""
        root = self.tree.root
        if self._output is not None:
            self._output.join(OUTPUT_DRAIN_S)
        if root is not None and root.stdout is not None and not (
                self._output and self._output.is_alive()):
            root.stdout.close()
        if self._tee is not None:
            stats = self._tee.stats
            self.evidence.output = dataclasses.asdict(stats)
            if stats.error:
                self.progress.stage("output", stats.error)
        if self.channel is not None:
            self.read_reports()
            self.channel.close()
            self.channel = None
