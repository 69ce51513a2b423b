"""Run a command, follow every descendant, judge each one, capture evidence, leave nothing behind.

The lab becomes a child subreaper, starts the command in a new session, and learns about
descendants from the kernel's process connector (fork/exit events with exit statuses, even for
children their own parent reaps) or, where that is refused, by polling /proc. Every live
descendant is sampled from /proc; a proven deadlock ends the run at once. Whatever happens —
a verdict, a timeout, an exception in the lab, SIGINT/SIGTERM — the tree is stopped (SIGCONT,
SIGTERM, SIGKILL) and reaped before ``run`` returns or raises.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import evidence as ev, forensics, interrupts, redact, reports
from lab.envinfo import platform_info
from lab.errors import BadInput, CommandNotFound, DebuggerMissing, Interrupted, LabError
from lab.linux import netlink, prctl, procfs
from lab.progress import Progress
from lab.reports import ReportChannel
from lab.rundir import RunDir, tee_output
from lab.verdicts import Verdict, worst
from lab.watch import judge

# Named waits. POLL_INTERVAL_S bounds how long the loop waits for an event before sampling
# /proc again; it sets the resolution of the time-to-verdict.
POLL_INTERVAL_S = 0.02
TERM_GRACE_S = 1.0
KILL_DEADLINE_S = 10.0
OUTPUT_DRAIN_S = 2.0
STRACE_FILE = "strace.txt"

# Every tracked pid of every live watch, for the atexit backstop.
_LIVE_PIDS: set[int] = set()
_SESSIONS: set[int] = set()  # process groups the lab started (each command leads its own)


@atexit.register
def _kill_leftovers() -> None:
    """The backstop when the lab dies of its own bug before its cleanup ran."""
    for pid in list(_LIVE_PIDS):
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
    for leader in list(_SESSIONS):  # what was forked after the last scan
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(leader, sig)
            except (ProcessLookupError, PermissionError):
                break


@dataclass
class WatchOptions:
    argv: list[str]
    timeout: float = 60.0
    debugger: str = "auto"  # auto | gdb | lldb | none
    out_base: Path = Path("crash_dumps")
    run_id: str | None = None
    scenario: str | None = None
    launcher: str | None = None
    expected: str | None = None
    side_channel: bool = False  # give the command LAB_REPORT_FIFO for its reports
    env: dict[str, str] | None = None
    cwd: str | None = None
    echo_output: bool = True
    strace: bool = False  # run the command under strace -f; keep the blocked one's syscalls
    target_python: str | None = None  # the version of the interpreter the target runs in
    debugger_timeout: float | None = None  # the whole capture; None: the driver's default
    gcore_limit_mb: float | None = None  # write a core of the culprit when below this size


@dataclass
class Tracked:
    record: ev.ProcessRecord
    forked_ns: int | None = None
    watch: judge.DeadlockWatch = field(default_factory=judge.DeadlockWatch)
    finished: bool = False
    wait_status: int | None = None
    finished_at: float | None = None


class Watch:
    """One watched run. ``run()`` returns the final Evidence or raises a LabError."""

    def __init__(self, options: WatchOptions, progress: Progress | None = None):
        self.options = options
        self.progress = progress or Progress()
        label = options.scenario or (Path(options.argv[0]).name if options.argv else "run")
        self.rundir = RunDir.create(options.out_base, options.run_id, label)
        self.evidence = ev.Evidence(
            run_id=self.rundir.run_id,
            command=redact.argv(list(options.argv)),
            platform=platform_info(),
            scenario=options.scenario,
            launcher=options.launcher,
            expected=options.expected,
            evidence_dir=str(self.rundir.path),
        )
        if options.target_python:
            self.evidence.platform.python = options.target_python
        self.tracked: dict[int, Tracked] = {}
        self.connector: netlink.ProcessConnector | None = None
        self.proc: subprocess.Popen | None = None
        self.channel: ReportChannel | None = None
        self.reports: list[dict] = []
        self.findings: list[dict] = []
        self.launched_at: float | None = None
        self.verdict_at: float | None = None
        self.deadlocked_pid: int | None = None
        self._output_thread: threading.Thread | None = None
        self._pending_error: LabError | None = None

    # -- public -----------------------------------------------------------------------------

    def run(self) -> ev.Evidence:
        try:
            self._start()
            outcome = self._follow()
            self._judge(outcome)
            self._capture()
            self._core()
        except Interrupted as exc:
            reached = self.evidence.verdict
            self.evidence.verdict = Verdict.INTERRUPTED.value
            self.evidence.error = str(exc) + (f" (after the verdict {reached})" if reached else "")
            self._stop_tree()
            self._finish()
            exc.evidence = self.evidence
            raise
        except BaseException as exc:
            if not isinstance(exc, LabError):
                self.evidence.error = f"lab error: {type(exc).__name__}: {exc}"
            else:
                self.evidence.error = exc.line()
                exc.evidence = self.evidence
            self._stop_tree()
            self._finish()
            raise
        self._stop_tree()
        self._finish()
        if self._pending_error is not None:
            self._pending_error.evidence = self.evidence
            raise self._pending_error
        return self.evidence

    # -- stages -----------------------------------------------------------------------------

    def _start(self) -> None:
        prctl.set_child_subreaper()
        try:
            self.connector = netlink.ProcessConnector()
            self.evidence.watch_mode = "netlink"
        except netlink.Unavailable as exc:
            self.evidence.watch_mode = "polling"
            self.evidence.watch_note = (
                f"{exc}; fell back to polling /proc: a descendant that exits and is reaped by "
                "its own parent between two polls is seen without its exit status"
            )
        env = dict(os.environ if self.options.env is None else self.options.env)
        env["LAB_RUN_ID"] = self.rundir.run_id
        self.evidence.environment = redact.environment(env)
        if self.options.side_channel:
            self.channel = ReportChannel(
                tempfile.mkdtemp(prefix=f"lab-{self.rundir.run_id}-report-"), owns_directory=True)
            env[reports.ENV_VAR] = self.channel.path
        argv = list(self.options.argv)
        if self.options.strace:
            argv = self._strace_prefix() + argv
        self._write("launch")
        self.progress.stage("launch", " ".join(redact.argv(argv)) +
                            f"  [watch mode: {self.evidence.watch_mode}]")
        self.launched_at = time.monotonic()
        with interrupts.deferred():  # the stop in run() must know every process it started
            try:
                self.proc = subprocess.Popen(
                    argv, env=env, cwd=self.options.cwd,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise CommandNotFound(f"command not found: {self.options.argv[0]}") from exc
            except PermissionError as exc:
                raise BadInput(f"command is not executable: {self.options.argv[0]}") from exc
            _LIVE_PIDS.add(self.proc.pid)
            _SESSIONS.add(self.proc.pid)
            self._add(self.proc.pid, os.getpid())
        self._output_thread = threading.Thread(target=self._tee_output, daemon=True,
                                               name="lab-output")
        self._output_thread.start()

    def _follow(self) -> str:
        """Follow the tree until it finishes, a deadlock is proven, or the timeout passes."""
        deadline = self.launched_at + self.options.timeout
        while True:
            self._drain_events()
            self._read_reports()
            self._reap_tracked()
            self._discover()
            now = time.monotonic()
            for pid, item in list(self.tracked.items()):
                if item.finished:
                    continue
                if self._sample(pid, item, now):
                    self.deadlocked_pid = pid
                    self.verdict_at = now
                    return "deadlock"
            if all(item.finished for item in self.tracked.values()):
                self.verdict_at = time.monotonic()
                return "finished"
            if now >= deadline:
                self.verdict_at = now
                return "timeout"
            waitables = [fd for fd in (self.connector, self.channel and self.channel.fd)
                         if fd is not None]
            select.select(waitables, [], [], min(POLL_INTERVAL_S, max(0.0, deadline - now)))

    def _judge(self, outcome: str) -> None:
        lead = self.tracked.get(self.deadlocked_pid) if self.deadlocked_pid else None
        now = time.monotonic()
        for pid, item in self.tracked.items():
            record = item.record
            if item is not lead and not item.finished:
                self._sample(pid, item, now)  # a fresh look at what it waits in right now
            if item.finished:
                continue
            if item is lead:
                record.verdict = Verdict.DEADLOCK.value
                record.detail = judge.describe_deadlock(record.threads)
                self._lock_forensics(pid, record)
            elif outcome == "timeout":
                record.verdict = Verdict.HANG.value
                record.detail = (f"not finished after --timeout {self.options.timeout:g} s; "
                                 + judge.describe_unfinished(item.watch))
            else:
                record.verdict = Verdict.HANG.value
                record.detail = (judge.describe_unfinished(item.watch) +
                                 f"; stopped by the lab once PID {self.deadlocked_pid} "
                                 "was proven deadlocked")
        self._apply_findings()
        self._exclude_tool_probes()
        self.evidence.verdict = worst(
            item.record.verdict for item in self.tracked.values() if item.record.verdict
        ).value
        self.evidence.detect_s = round(self.verdict_at - self.launched_at, 4)
        self._timings()
        self._write("verdict")
        culprit = self._culprit()
        where = f" (PID {culprit})" if culprit else ""
        self.progress.stage("verdict", f"{self.evidence.verdict}{where} after "
                            f"{self.evidence.detect_s:.3f} s")

    def _lock_forensics(self, pid: int, record: ev.ProcessRecord) -> None:
        """Whose lock is it: the owner TID of a glibc mutex the deadlocked child waits on."""
        findings = forensics.orphaned_locks(pid, record.threads, self.evidence.parent,
                                            record.ppid)
        self.evidence.forensics.extend(findings)
        for finding in findings:
            if finding.get("orphaned"):
                self.progress.stage("forensics", finding["summary"])

    def _exclude_tool_probes(self) -> None:
        """strace forks probe children of its own (and SIGKILLs them): they are not judged.

        Whether the lab added strace (--strace) or the watched command is strace itself, a
        probe is a child of strace that never exec'd: its argv is strace's own, or unreadable
        (it was already a zombie when the lab first saw it).
        """
        argv_of = {item.record.pid: item.record.argv for item in self.tracked.values()}

        def is_strace(argv: list[str]) -> bool:
            return bool(argv) and os.path.basename(argv[0]) == "strace"

        for item in self.tracked.values():
            record = item.record
            if (is_strace(argv_of.get(record.ppid or -1, []))
                    and (not record.argv or is_strace(record.argv))):
                record.verdict = None
                record.detail = "strace's own probe process (part of the tooling; not judged)"

    def _apply_findings(self) -> None:
        """Fold in what /proc cannot see: a scenario's own finding, a swallowed exception."""
        for finding in self.findings:
            item = self.tracked.get(finding.get("pid"))
            if item is None:
                continue
            record = item.record
            if finding["event"] == "finding":
                verdict, detail = finding["verdict"], finding["detail"]
            elif record.verdict == Verdict.OK.value:
                verdict = Verdict.ERROR.value
                detail = (f"exited 0, but a worker's {finding['type']}: {finding['message']} "
                          "was delivered to a Future and never re-raised")
            else:
                continue
            record.verdict = worst([record.verdict or "ok", verdict]).value
            record.detail = f"{record.detail}; {detail}" if record.detail else detail

    def _capture(self) -> None:
        target = self._debug_target()
        name = self._debugger_name()
        if target is None or name == "none":
            return
        if self.options.strace:
            self.progress.stage("debugger", f"skipped: strace already traces PID {target} "
                                "(a process has one tracer at a time)")
            return
        self.progress.stage("debugger", f"attaching {name} to PID {target}")
        started = time.monotonic()
        try:
            from lab import debuggers

            driver = debuggers.get(name)
            extra = ({"timeout": self.options.debugger_timeout}
                     if self.options.debugger_timeout else {})
            info = driver.capture(target, self.rundir.path,
                                  progress=lambda text: self.progress.stage("debugger", text),
                                  **extra)
        except Interrupted:
            raise
        except LabError as exc:
            self.evidence.debugger = ev.DebuggerInfo(name=name, pid=target, error=exc.line())
            if (self.rundir.path / f"{name}.txt").exists():
                self.evidence.debugger.transcript = f"{name}.txt"
            self._pending_error = exc
            self.progress.stage("debugger", f"failed: {exc.line()}")
            return
        self.evidence.debugger = info
        self.evidence.timings["debugger_s"] = round(time.monotonic() - started, 4)
        if self.evidence.timings.get("fork_to_verdict_s") is not None:
            self.evidence.timings["fork_to_evidence_s"] = round(
                self.evidence.timings["fork_to_verdict_s"] + self.evidence.timings["debugger_s"], 4)
        self._write("debugger")
        self.progress.stage("debugger", f"{len(info.threads)} thread(s), "
                            f"{sum(len(t.frames) for t in info.threads)} native frames, "
                            f"{sum(len(t.python_frames) for t in info.threads)} Python frames "
                            f"in {self.evidence.timings['debugger_s']:.2f} s")

    def _core(self) -> None:
        """With --gcore: a core of the culprit, after the debugger, within the size limit."""
        target = self._debug_target()
        if self.options.gcore_limit_mb is None or target is None or self.options.strace:
            return
        from lab.debuggers import gcore

        self.progress.stage("core", f"gcore of PID {target} "
                            f"(limit {self.options.gcore_limit_mb:g} MiB)")
        self.evidence.core = gcore.dump(target, self.rundir.path, self.options.gcore_limit_mb)
        self._write("core")
        core = self.evidence.core
        self.progress.stage("core", f"{core['file']}: {core['bytes']:,} bytes in "
                            f"{core['seconds']:.2f} s" if "file" in core else
                            core.get("skipped") or core.get("error", ""))

    def _strace_prefix(self) -> list[str]:
        import shutil

        if not shutil.which("strace"):
            raise DebuggerMissing("strace is not installed", "apt-get install strace")
        return ["strace", "-f", "-tt", "-T", "-s", "80", "-o",
                str(self.rundir.path / STRACE_FILE)]

    def _strace_tail(self) -> None:
        from lab.parsers.strace import tail_of

        path = self.rundir.path / STRACE_FILE
        culprit = self._culprit()
        if path.exists() and culprit:
            self.evidence.strace = {"file": STRACE_FILE, "pid": culprit,
                                    "tail": tail_of(path.read_text(errors="replace"), culprit)}

    def _finish(self) -> None:
        self._join_output()
        if self.options.strace:
            self._strace_tail()
        self.evidence.stages = list(self.progress.stages)
        self.evidence.complete = True
        self._write("final")
        self.rundir.write_summary(self.evidence)
        self.progress.stage("evidence", f"{self.rundir.path}/evidence.json")

    # -- tracking ---------------------------------------------------------------------------

    def _add(self, pid: int, ppid: int | None, forked_ns: int | None = None) -> Tracked:
        item = self.tracked.get(pid)
        if item is None:
            try:
                argv = procfs.cmdline(pid)
            except (procfs.Gone, PermissionError):
                argv = []
            item = Tracked(record=ev.ProcessRecord(pid=pid, ppid=ppid, argv=redact.argv(argv)),
                           forked_ns=forked_ns)
            self.tracked[pid] = item
            _LIVE_PIDS.add(pid)
        return item

    def _drain_events(self) -> None:
        if self.connector is None:
            return
        for event in self.connector.read_events():
            if event.is_thread:
                continue
            if isinstance(event, netlink.ForkEvent):
                if event.parent_tgid in self.tracked:
                    self._add(event.child_tgid, event.parent_tgid, event.timestamp_ns)
            elif event.tgid in self.tracked:
                self._finished(event.tgid, event.wait_status, event.timestamp_ns / 1e9)

    def _reap_tracked(self) -> None:
        for pid in list(self.tracked):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue  # not our child (its own parent reaps it) or already reaped
            if done:
                if self.proc is not None and pid == self.proc.pid:
                    self.proc.returncode = os.waitstatus_to_exitcode(status)
                self._finished(pid, status, time.monotonic())

    def _discover(self) -> None:
        parents = [pid for pid, item in self.tracked.items() if not item.finished]
        for parent in parents:
            try:
                kids = procfs.children(parent)
            except procfs.Gone:
                continue
            for kid in kids:
                if kid not in self.tracked:
                    self._add(kid, parent)
        # Orphans re-parented to us, the subreaper: ours only when they are in the command's
        # session. A process that runs several watches in turn (trials, the matrix) may still
        # have another watch's children, or children of its own, that are none of ours.
        try:
            adopted = procfs.children(os.getpid())
        except procfs.Gone:
            return
        for kid in adopted - self.tracked.keys():
            try:
                if self.proc is not None and procfs.stat(kid).session == self.proc.pid:
                    self._add(kid, os.getpid())
            except procfs.Gone:
                continue

    def _sample(self, pid: int, item: Tracked, now: float) -> bool:
        """Sample one live process; return True once it is proven deadlocked."""
        try:
            st = procfs.stat(pid)
            if st.state == "Z":
                if item.wait_status is None and st.exit_code is not None:
                    self._finished(pid, st.exit_code, now)
                return False
            threads = procfs.threads(pid)
            item.record.argv = redact.argv(procfs.cmdline(pid)) or item.record.argv
        except procfs.Gone:
            if self.connector is None and not item.finished:
                # Polling mode: it exited and was reaped by its own parent between polls.
                self._finished(pid, None, now)
            return False
        item.record.threads = threads
        return item.watch.feed(now, threads)

    def _finished(self, pid: int, wait_status: int | None, when: float) -> None:
        item = self.tracked[pid]
        if item.finished:
            return
        item.finished = True
        item.wait_status = wait_status
        item.finished_at = when
        record = item.record
        if wait_status is None:
            record.verdict = None
            record.detail = ("exited; its exit status was not observed (reaped by its own parent "
                             "between two polls: the process connector was not available)")
            return
        if os.WIFSIGNALED(wait_status):
            number = os.WTERMSIG(wait_status)
            record.signal = judge.signal_name(number)
            record.exit_code = -number
            if record.killed_by_lab:
                return
            record.verdict = Verdict.CRASH.value
            core = " (core dumped)" if os.WCOREDUMP(wait_status) else ""
            record.detail = f"killed by {record.signal}{core}, a signal the lab did not send"
        elif os.WIFEXITED(wait_status):
            record.exit_code = os.WEXITSTATUS(wait_status)
            if record.killed_by_lab:
                return
            record.verdict = Verdict.OK.value if record.exit_code == 0 else Verdict.ERROR.value
            record.detail = f"exited with status {record.exit_code}"

    # -- side channel and output ------------------------------------------------------------

    def _read_reports(self) -> None:
        if self.channel is None:
            return
        for report in self.channel.read():
            self.reports.append(report)
            kind = report.get("event")
            if kind in ("finding", "exception"):
                self.findings.append(report)
            elif kind == "warning":
                self.evidence.warnings.append(report)
            if kind == "fork" and self.evidence.parent.pid is None:
                self.evidence.parent = reports.parent_info(report)
                vanished = [t.name for t in self.evidence.parent.threads_at_fork]
                self.progress.stage("fork", f"PID {report['pid']} forked; threads the child "
                                    f"does not inherit: {', '.join(vanished) or 'none'}")

    def _tee_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        tee_output(self.proc.stdout, self.rundir.path / "output.txt", self.options.echo_output)

    def _join_output(self) -> None:
        if self._output_thread is not None:
            self._output_thread.join(OUTPUT_DRAIN_S)
        if self.proc is not None and self.proc.stdout is not None and not (
                self._output_thread and self._output_thread.is_alive()):
            self.proc.stdout.close()
        if self.channel is not None:
            self._read_reports()
            self.channel.close()
            self.channel = None

    # -- ending the run ---------------------------------------------------------------------

    def _stop_tree(self) -> None:
        """SIGCONT then SIGTERM every live descendant, SIGKILL after a grace, reap them all."""
        if self.proc is None:
            if self.connector:
                self.connector.close()
                self.connector = None
            return
        self._discover()
        live = self._live_pids()
        if live:
            self.progress.stage("cleanup", f"stopping {len(live)} process(es): "
                                f"{', '.join(map(str, sorted(live)))}")
        for sig in (signal.SIGCONT, signal.SIGTERM):
            self._signal_all(live, sig)
        self._signal_group(signal.SIGCONT)
        self._wait_gone(TERM_GRACE_S)
        live = self._live_pids()
        self._signal_all(live, signal.SIGKILL)
        self._signal_group(signal.SIGKILL)
        self._wait_gone(KILL_DEADLINE_S)
        self._reap_everything()
        self._wait_reaped(KILL_DEADLINE_S)
        if self.connector:
            self._drain_events()
            self.connector.close()
            self.connector = None
        for pid in self.tracked:
            _LIVE_PIDS.discard(pid)
        _SESSIONS.discard(self.proc.pid)

    def _live_pids(self) -> list[int]:
        self._discover()
        return [pid for pid, item in self.tracked.items()
                if not item.finished and not procfs.is_zombie(pid)]

    def _signal_all(self, pids, sig) -> None:
        for pid in pids:
            self.tracked[pid].record.killed_by_lab = True
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _signal_group(self, sig) -> None:
        # Catch a process forked after the last scan: the session leader's group.
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_gone(self, limit: float) -> None:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            self._drain_events()
            self._reap_tracked()
            if not self._live_pids():
                return
            waitables = [self.connector] if self.connector else []
            select.select(waitables, [], [], POLL_INTERVAL_S)

    def _wait_reaped(self, limit: float) -> None:
        """Until no tracked process is left in /proc, even as a zombie: a dead grandchild
        whose parent dies after it is re-parented to us, and must be reaped here, not by the
        next watch this process runs."""
        end = time.monotonic() + limit
        while True:
            self._reap_everything()
            left = [pid for pid in self.tracked if self._still_ours(pid)]
            if not left or time.monotonic() >= end:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            select.select([], [], [], POLL_INTERVAL_S)

    def _still_ours(self, pid: int) -> bool:
        """Does ``pid`` still exist as a process of the command's session (not a reused PID)?"""
        try:
            return self.proc is not None and procfs.stat(pid).session == self.proc.pid
        except procfs.Gone:
            return False

    def _reap_everything(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.tracked:
                if self.proc is not None and pid == self.proc.pid:
                    self.proc.returncode = os.waitstatus_to_exitcode(status)
                self._finished(pid, status, time.monotonic())

    # -- helpers ----------------------------------------------------------------------------

    def _culprit(self) -> int | None:
        if self.deadlocked_pid:
            return self.deadlocked_pid
        for pid, item in self.tracked.items():
            if item.record.verdict == self.evidence.verdict:
                return pid
        return None

    def _debug_target(self) -> int | None:
        if self.deadlocked_pid:
            return self.deadlocked_pid
        hung = [pid for pid, item in self.tracked.items() if item.record.verdict == "hang"
                and not item.finished]
        parents = {self.tracked[pid].record.ppid for pid in hung}
        leaves = [pid for pid in hung if pid not in parents]
        return (leaves or hung or [None])[0]

    def _debugger_name(self) -> str:
        import shutil

        choice = self.options.debugger
        if choice != "auto":
            return choice
        from lab import debuggers

        for name in ("gdb", "lldb"):
            if shutil.which(name) and name in debuggers.DRIVERS:
                return name
        self.progress.stage("debugger", "none found (auto): the verdict stands on /proc alone")
        return "none"

    def _timings(self) -> None:
        timings = self.evidence.timings
        timings["launch_to_verdict_s"] = self.evidence.detect_s
        lead = self.tracked.get(self._culprit() or -1)
        fork_s = None
        if lead is not None and lead.forked_ns is not None:
            fork_s = lead.forked_ns / 1e9
        elif self.reports:
            fork_s = self.reports[0].get("t_ns", 0) / 1e9 or None
        if fork_s is not None:
            timings["fork_to_verdict_s"] = round(self.verdict_at - fork_s, 4)
        if lead is not None and lead.watch.first_blocked_at is not None:
            blocked_at = lead.watch.first_blocked_at
            timings["blocked_to_verdict_s"] = round(self.verdict_at - blocked_at, 4)
            if fork_s is not None:
                timings["fork_to_blocked_s"] = round(lead.watch.first_blocked_at - fork_s, 4)

    def _write(self, _stage: str) -> None:
        self.evidence.processes = [item.record for item in self.tracked.values()]
        self.rundir.write_evidence(self.evidence)
