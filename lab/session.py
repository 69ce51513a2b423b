"""One run's lifecycle, owned once: run dir and evidence, report channel, output, processes, end.

A RunSession is what every way of observing a run shares. It creates the run directory and
seeds the evidence, launches the target (its environment, a scratch directory, the report
channel, the output tee, the ProcessTree), folds every report into the evidence, and — whatever
happens: a verdict, a timeout, the lab's own exception, SIGINT/SIGTERM — stops and reaps the
tree and writes the evidence atomically, complete, once. An *observer* (the watcher, the
catch, the inspector) does the watching in between; ``run(observer)`` holds the two together.

A target that already runs (``Target.pid``: ``lab inspect PID``) is the same lifecycle with
two steps changed: ``launch`` starts nothing and attaches to nothing, and the end checks that
every process the observer found (``found``) was left as it was found, instead of stopping a
tree the lab never owned.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lab import envinfo, evidence as ev, faults, forks, hook, process, redact, runs
from lab.backend import RUN_ID_VAR
from lab.envinfo import platform_info
from lab.errors import DebuggerFailed, EvidenceNotWritten, Interrupted, LabError
from lab.options import RunOptions
from lab.output import OutputTee
from lab.process.tree import ProcessTree
from lab.progress import Progress, shown
from lab.reports import Event, ReportChannel
from lab.rundir import RunDir
from lab.stacks import pyspy
from lab.target import Target
from lab.verdicts import Verdict, worst

OUTPUT_DRAIN_S = 2.0
OUTPUT_FILE = "output.txt"
MAX_HELD_REPORTS = 1024  # reports from a PID the tree has not seen (yet): kept, then dropped


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
            expected=target.expected, evidence_dir=str(self.rundir.path),
            mode="inspect" if target.pid is not None else None)
        if target.python_version:
            self.evidence.platform.python = target.python_version
        self.backend = process.backend()
        self.tree = ProcessTree(self.backend, self.rundir.run_id)
        self.tree.on_stop = lambda live: self.progress.stage(
            "cleanup", f"stopping {len(live)} process(es): {', '.join(map(str, sorted(live)))}")
        self.channel: ReportChannel | None = None
        self.reports: list[dict[str, Any]] = []  # every report, in arrival order
        self.findings: list[dict[str, Any]] = []  # finding and exception reports
        self.forks = forks.ForkLog(snapshots=target.fork_hook)  # every fork and its threads
        self.hook_dir: Path | None = None  # the startup hook's files (faulthandler dumps)
        self._held: list[dict[str, Any]] = []  # reports whose PID is not (yet) in the tree
        self._verdict_stacks: tuple[int, list[ev.DebugThread], str] | None = None
        self.scratch: Path | None = None
        self.launched_at: float | None = None
        self.verdict_at: float | None = None
        self.pending_error: LabError | None = None  # raised once the evidence is complete
        self._output: threading.Thread | None = None
        self._tee: OutputTee | None = None
        self._registered: runs.RunEntry | None = None
        self._program_env: dict[str, str] | None = None  # the program's, without the lab's
        # An existing target's processes as the observer found them: {pid: (stopped, tracer)}.
        self.found: dict[int, tuple[bool, int]] = {}
        self.not_as_found: dict[int, str] = {}  # {pid: what changed}, checked at the end

    @property
    def launches(self) -> bool:
        """False for a target that already runs: the lab owns none of its processes."""
        return self.target.pid is None

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
                                       f"{shown(self.rundir.path)} is incomplete: "
                                       f"{self.rundir.failed}")
            error.evidence = self.evidence
            raise error
        if self.pending_error is not None:
            self.pending_error.evidence = self.evidence
            raise self.pending_error
        return self.evidence

    def _end(self, observer: Observer) -> None:
        try:
            observer.release(self)
            if self.launches:
                self._parent_at_verdict()
        finally:
            if self.launches:
                self.tree.stop()
                self._drain()
                self._explain()
            else:
                self._check_left_as_found()
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
            for temporary in (self.scratch, self.hook_dir):
                if temporary is not None:
                    shutil.rmtree(temporary, ignore_errors=True)
            if self._registered is not None:
                runs.unregister(self._registered)
            self.progress.stage("evidence", shown(self.rundir.path / "evidence.json"))

    def _check_left_as_found(self) -> None:
        """Every process found is left as it was found (running, untraced), or it is an error,
        raised once the evidence is complete."""
        self.not_as_found = process.left_as_found(self.found)
        for pid, problem in self.not_as_found.items():
            self.progress.stage("cleanup", f"PID {pid} is {problem} after the run")
            self.pending_error = self.pending_error or DebuggerFailed(
                f"process {pid} is {problem} after the inspection")

    # -- launching -------------------------------------------------------------------------

    def launch(self, *, argv_prefix: list[str] | None = None,
               extra_env: dict[str, str] | None = None, note: str | None = None) -> None:
        """Start the target with the lab's environment; its output is teed to output.txt. A
        target that already runs is not touched: the run is registered, the seeded evidence
        written."""
        if not self.launches:
            self.write()
            self._registered = runs.register(self.rundir.run_id, self.rundir.path, [])
            return
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
                tempfile.mkdtemp(prefix=f"lab-{self.rundir.run_id}-report-"), owns_directory=True,
                fifo=self.backend.report_fifo)
            env.update(self.channel.environment())
        if self.target.fork_hook:
            self.evidence.hook = hook.describe(env)
            if self.evidence.hook["active"]:
                self.hook_dir = Path(tempfile.mkdtemp(prefix=f"lab-{self.rundir.run_id}-hook-"))
                env.update(hook.environment(env, self.hook_dir))
        self.evidence.environment = redact.environment(env)
        self.evidence.lab_environment = sorted(
            key for key, value in env.items() if os.environ.get(key) != value
            and (key not in self.target.env or key.startswith("LAB_")))
        self._program_env = {**os.environ, **self.target.env}
        argv = [*(argv_prefix or []), *self.target.argv]
        self.write()
        self.progress.stage("launch", " ".join(redact.argv(argv)) + "  ["
                            + (note or f"watch mode: {self.evidence.watch_mode}") + "]")
        self.launched_at = time.monotonic()
        root = self.tree.spawn(argv, env=env, cwd=self.target.cwd)
        temp = [Path(self.channel.directory)] if self.channel else []
        temp += [path for path in (self.scratch, self.hook_dir) if path is not None]
        self._registered = runs.register(self.rundir.run_id, self.rundir.path, temp)
        self._tee = OutputTee(self.rundir.path / OUTPUT_FILE, self.options.echo_output)
        self._output = threading.Thread(target=self._tee.run, args=(root.stdout.fileno(),),
                                        daemon=True, name="lab-output")
        self._output.start()

    # -- reports ---------------------------------------------------------------------------

    def read_reports(self) -> list[dict[str, Any]]:
        """Fold the reports that arrived into the evidence; return them. A raw command's tree
        (``fork_hook``: anything in it may write) is heard only about its own processes: a
        report about another PID is held until the tree knows the PID (a process the tree
        sees a moment later), and dropped at the end. With the fork hook, also note the tree's
        new children (their parents' threads, from /proc)."""
        arrived = self._held + (self.channel.read() if self.channel is not None else [])
        self._held, new = [], []
        for report in arrived:
            pid = report.get("pid")
            if not self.target.fork_hook or (isinstance(pid, int) and pid in self.tree.members):
                new.append(report)
            elif len(self._held) < MAX_HELD_REPORTS:
                self._held.append(report)
        for report in new:
            self.reports.append(report)
            kind = report["event"]
            if kind in (Event.FINDING, Event.EXCEPTION):
                self.findings.append(report)
            elif kind == Event.WARNING:
                self.evidence.warnings.append(report)
            elif kind == Event.LAUNCH and isinstance(report.get("method"), str):
                self.evidence.start_method = report["method"][:32]
            elif kind == Event.FORK:
                self._first_fork(self.forks.add(report))
            elif kind == Event.EXIT:
                self._reported_exit(report)
            elif kind == Event.GUARD and isinstance(report.get("fork"), dict):
                self.evidence.risky_forks.append(report["fork"])
        if self.target.fork_hook:
            for info in self.forks.observe(self.tree):
                self._first_fork(info)
        return new

    def _reported_exit(self, report: dict[str, Any]) -> None:
        pid, ppid, code = (report.get(key) for key in ("pid", "ppid", "code"))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (pid, ppid, code)):
            self.tree.reported(pid, ppid, code, time.monotonic())

    def _first_fork(self, info: ev.ParentInfo | None) -> None:
        """The first fork (with the hook: the first that left threads behind) is the parent
        until the verdict says which fork made the culprit (``_explain``)."""
        if info is None or self.evidence.parent.pid is not None:
            return
        if self.target.fork_hook and not info.threads_at_fork:
            return
        self.evidence.parent = info
        vanished = [t.python_name or t.name for t in info.threads_at_fork]
        self.progress.stage("fork", f"PID {info.pid} forked; threads the child does not "
                            f"inherit: {', '.join(vanished) or 'none'}")

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

    # -- why: threads at fork, stacks, crashes ---------------------------------------------

    def culprit(self) -> ev.ProcessRecord | None:
        """The first process whose verdict is the run's."""
        return next((r for r in self.tree.records if r.verdict and
                     r.verdict == self.evidence.verdict), None)

    def _parent_at_verdict(self) -> None:
        """Before the tree is stopped: the Python stacks of the culprit's parent, if it still
        runs (py-spy reads them from its memory: nothing runs in the program, nothing pauses
        it)."""
        if not self.target.fork_hook or self.evidence.verdict not in ("deadlock", "hang"):
            return
        culprit = self.culprit()
        parent = self.tree.members.get(culprit.ppid) if culprit else None
        if parent is None or parent.finished or not (
                parent.record.pid in self.forks.by_parent or forks.looks_python(parent.record)):
            return
        threads, note = forks.at_verdict(pyspy.dump(parent.record.pid, blocking=False))
        self._verdict_stacks = (parent.record.pid, threads, note)
        self.progress.stage("parent", f"PID {parent.record.pid} at the verdict: "
                            f"{len(threads)} thread(s) with Python stacks ({note})")

    def _explain(self) -> None:
        """After the tree is gone: where each crash happened (the faulthandler dumps), which
        fork made the culprit and what it left behind (``lab.forks``)."""
        self.evidence.processes = self.tree.records
        try:
            for pid in faults.collect(self.hook_dir, self.evidence.processes, self.rundir.path):
                record = self.tree.members[pid].record
                if record.signal in faults.FATAL_SIGNALS:
                    self.progress.stage("crash", f"PID {pid} {faults.headline(record)}")
            self.forks.finish(self.evidence, self.culprit())
        except Exception as exc:  # the evidence is written all the same, without them
            self.progress.stage("evidence", f"the threads at fork and crash stacks were not "
                                f"added: {type(exc).__name__}: {exc}")
        if self.target.fork_hook:  # a raw command: its interpreter may not be the lab's
            try:
                self._describe_interpreter()
            except Exception as exc:  # the evidence is written all the same, with the lab's
                self.progress.stage("evidence", f"the program's interpreter was not asked: "
                                    f"{type(exc).__name__}: {exc}")
        parent = self.evidence.parent
        if self._verdict_stacks is not None and self._verdict_stacks[0] == parent.pid:
            _, parent.threads_at_verdict, parent.at_verdict = self._verdict_stacks
        if self.evidence.hook is not None:
            self.evidence.hook.update(forks_seen=self.forks.count,
                                      forks_not_kept=self.forks.dropped,
                                      reports_dropped=len(self._held) + self.forks.malformed)

    def _describe_interpreter(self) -> None:
        """The versions of the program's own Python and packages, not the lab's: asked of the
        interpreter the first Python process of the tree ran."""
        python = next((r for r in self.tree.records if forks.looks_python(r)), None)
        if python is None or self._program_env is None:
            return
        answer = envinfo.target_interpreter(python.argv[0], self._program_env, self.target.cwd)
        if answer is not None:
            envinfo.use_target_interpreter(self.evidence.platform, answer)
            if self.evidence.platform.interpreter != sys.executable:
                self.progress.stage("evidence", f"the program's Python: "
                                    f"{self.evidence.platform.interpreter} "
                                    f"{self.evidence.platform.python}")

    # -- evidence --------------------------------------------------------------------------

    def write(self) -> None:
        """Write evidence.json now (atomically), with every process seen so far (of a target
        that already runs: the observer's records)."""
        if self.launches:
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
