"""Catch a scenario's child in a debugger: hold it before it acts, attach, let it fail, capture.

The child stops itself before the scenario's code runs (``LAB_HOLD_CHILD=1``: a SIGSTOP
handshake, never a sleep); the lab sees it stopped, attaches lldb (or gdb) with a static
command file and lets it run. A breakpoint instruction — libdispatch's ``brk #0x1`` on macOS,
the breakpoint-trap scenario anywhere — stops it with SIGTRAP inside the debugger. On Linux
the ChromaDB child deadlocks instead: the lab proves that from /proc, notes the proof in the
transcript and interrupts the child with SIGINT, which the debugger stops on and never
delivers. At either stop the debugger records the stop reason, every thread's stack, the frame,
its disassembly and the registers. The evidence goes to ``crash_dumps/<run-id>/``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab import evidence as ev, interrupts, redact, reports, scenarios
from lab.debuggers import batch
from lab.envinfo import platform_info
from lab.errors import BadInput, DebuggerFailed, LabError, TargetExited
from lab.progress import Progress
from lab.reports import ReportChannel
from lab.rundir import RunDir, new_run_id, tee_output
from lab.verdicts import Verdict

DRIVERS = {"lldb": "lab.debuggers.lldb", "gdb": "lab.debuggers.gdb_batch"}
FAILURES = (Verdict.CRASH.value, Verdict.DEADLOCK.value)  # what the catch came for
REPO = Path(__file__).resolve().parents[1]

POLL_S = 0.02  # how often the child is sampled from /proc while it runs under the debugger
ATTACH_TIMEOUT_S = 60.0  # attach and load the symbols of every mapped library (ChromaDB: ~1 s)
CAPTURE_TIMEOUT_S = 120.0  # from the stop to the debugger's exit (frames, disassembly, detach)
EXIT_TIMEOUT_S = 10.0  # the scenario's parent ending once its child is gone
OUTPUT_DRAIN_S = 2.0


@dataclass
class CatchOptions:
    scenario: str = "chromadb-tokio"
    debugger: str = "lldb"
    launcher: str = "fork"
    timeout: float | None = None  # seconds the child may run under the debugger; None: default
    out_base: Path = Path("crash_dumps")
    echo_output: bool = True


def catch(options: CatchOptions, progress: Progress | None = None) -> ev.Evidence:
    """Run the catch; return the evidence (also written under ``out_base/<run-id>/``).

    Raises BadInput, MissingPackage, DebuggerMissing, PtraceRefused, TargetExited (the child
    never stopped itself or vanished before the attach), DebuggerFailed; the evidence gathered
    until then is attached to the error and on disk, and no process is left behind.
    """
    return _Catch(options, progress or Progress()).run()


def outcome(evidence: ev.Evidence) -> str | None:
    """None when the catch captured what it came for (a crash or a proven deadlock, with the
    debugger's stop and stacks); else the one-line reason."""
    dbg = evidence.debugger
    if evidence.verdict not in FAILURES:
        return (f"the child did not crash or deadlock (verdict {evidence.verdict}); "
                f"evidence: {evidence.evidence_dir}")
    if dbg is None or not any(t.frames for t in dbg.threads):
        why = dbg.error if dbg and dbg.error else "no stack was recorded"
        return f"{evidence.verdict} seen but not captured: {why}; evidence: {evidence.evidence_dir}"
    return None


class _Catch:
    def __init__(self, options: CatchOptions, progress: Progress):
        self.options = options
        self.progress = progress
        if options.debugger not in DRIVERS:
            raise BadInput(f"unknown debugger {options.debugger!r}",
                           f"choose one of: {', '.join(DRIVERS)}")
        if options.timeout is not None and options.timeout <= 0:
            raise BadInput(f"--timeout must be > 0, got {options.timeout:g}")
        self.scenario = scenarios.get(options.scenario)
        if options.launcher not in self.scenario.expected:
            raise BadInput(f"scenario {options.scenario!r} does not run under launcher "
                           f"{options.launcher!r}; it runs under: "
                           f"{', '.join(self.scenario.expected)}")
        missing = self.scenario.missing()
        if missing:
            raise scenarios.MissingPackage(
                f"scenario {options.scenario!r} needs {', '.join(missing)}, not installed here",
                f"pip install {' '.join(missing)}")
        self.driver = importlib.import_module(DRIVERS[options.debugger])
        self.debugger_path = self.driver.find()
        label = f"{options.scenario}-{options.launcher}-{options.debugger}"
        self.rundir = RunDir.create(options.out_base, new_run_id(label), label)
        self.argv = [sys.executable, "-m", "lab.scenarios.host", options.scenario,
                     "--launcher", options.launcher]
        self.evidence = ev.Evidence(
            run_id=self.rundir.run_id, command=redact.argv(self.argv), platform=platform_info(),
            scenario=options.scenario, launcher=options.launcher,
            expected=self.scenario.expected[options.launcher],
            evidence_dir=str(self.rundir.path),
            watch_mode="debugger",
            watch_note=f"the child runs under {options.debugger} from its first instruction; "
                       "on Linux /proc is sampled to prove a deadlock",
        )
        self.host: subprocess.Popen | None = None
        self.session: batch.Session | None = None
        self.child: int | None = None
        self.child_record: ev.ProcessRecord | None = None
        self.scratch: str | None = None
        self.channel: ReportChannel | None = None
        self._tee: threading.Thread | None = None
        self.launched_at = 0.0
        self.attach_started = 0.0
        self.verdict_at: float | None = None
        self.interrupted_for: str | None = None

    def run(self) -> ev.Evidence:
        try:
            self._launch()
            self._hold()
            self._attach()
            self._follow()
            self._capture()
        except BaseException as error:
            if isinstance(error, LabError):
                self.evidence.error = error.line()
                error.evidence = self.evidence
            else:
                self.evidence.error = f"lab error: {type(error).__name__}: {error}"
            self._cleanup()
            raise
        self._cleanup()
        return self.evidence

    # -- stages -----------------------------------------------------------------------------

    def _launch(self) -> None:
        self.scratch = tempfile.mkdtemp(prefix=f"lab-{self.rundir.run_id}-")
        self.channel = ReportChannel(self.scratch)
        env = {**os.environ, **self.scenario.env, "LAB_HOLD_CHILD": "1",
               "LAB_SCRATCH_DIR": self.scratch, "LAB_RUN_ID": self.rundir.run_id,
               reports.ENV_VAR: self.channel.path}
        self.evidence.environment = redact.environment(env)
        self.progress.stage("launch", " ".join(self.evidence.command) +
                            "  [the child stops itself before it runs the scenario]")
        self._write()
        self.launched_at = time.monotonic()
        with interrupts.deferred():  # the cleanup must know the host it started
            self.host = subprocess.Popen(
                self.argv, env=env, cwd=str(REPO), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.evidence.processes.append(ev.ProcessRecord(
            pid=self.host.pid, ppid=os.getpid(), argv=self.evidence.command,
            detail="the scenario's parent"))
        self._tee = threading.Thread(target=self._tee_output, name="lab-output", daemon=True)
        self._tee.start()

    def _hold(self) -> None:
        """Wait (with a deadline) for the child to stop itself; that is the handshake."""
        assert self.host is not None
        end = time.monotonic() + self.scenario.default_timeout
        while True:
            self._read_reports()
            self.child = _stopped_descendant(self.host.pid)
            if self.child is not None:
                break
            code = self.host.poll()
            if code is not None:
                raise TargetExited(f"the scenario's parent exited with status {code} before "
                                   "its child stopped itself", "see output.txt")
            if time.monotonic() > end:
                raise TargetExited(f"no child of process {self.host.pid} stopped itself within "
                                   f"{self.scenario.default_timeout:g} s")
            time.sleep(POLL_S)  # polling a process state under a deadline
        self.child_record = ev.ProcessRecord(pid=self.child, ppid=self.host.pid,
                                             argv=self.evidence.command)
        self.evidence.processes.append(self.child_record)
        self.progress.stage("hold", f"child {self.child} stopped itself before the scenario ran")
        self._write()

    def _attach(self) -> None:
        assert self.child is not None
        name = self.options.debugger
        notes = {"pid": str(self.child), "scenario": self.options.scenario}
        self.session = batch.Session(self.driver.catch_argv(self.debugger_path, self.child),
                                     self.rundir.path / self.driver.TRANSCRIPT_NAME, notes)
        self.progress.stage("debugger", f"attaching {name} to PID {self.child}")
        self.attach_started = time.monotonic()
        self.session.start()
        if not self.session.wait_for(lambda: self.session.reached("continue"),
                                     ATTACH_TIMEOUT_S):
            raise self.driver.attach_error(self.session, self.child) or DebuggerFailed(
                f"{name} did not attach to process {self.child} within "
                f"{ATTACH_TIMEOUT_S:g} s (last step: {self.session.last_step or 'attach'})")
        # The self-stop's group-stop must end, or the child stops again once the debugger
        # lets go (the kernel reinstates a group-stop on detach); the debugger passes it on.
        batch.send(self.child, signal.SIGCONT)
        self.progress.stage("debugger", f"{name} attached in "
                            f"{time.monotonic() - self.attach_started:.2f} s; child continued")

    def _follow(self) -> None:
        """Until the debugger reports a stop: sample the child, prove a deadlock, interrupt."""
        from lab.linux import procfs
        from lab.watch import judge

        session = self.session
        assert session is not None and self.child is not None
        limit = self.options.timeout or self.scenario.default_timeout
        end = time.monotonic() + limit
        watch = judge.DeadlockWatch()
        linux = sys.platform.startswith("linux")
        while not session.wait_for(lambda: session.reached("version"), POLL_S):
            self._read_reports()
            now = time.monotonic()
            stuck = self.verdict_at is not None and now > self.verdict_at + CAPTURE_TIMEOUT_S
            if session.finished or stuck:
                break
            if linux and self.interrupted_for is None:
                try:
                    threads = procfs.threads(self.child)
                except procfs.Gone:
                    break
                self.child_record.threads = threads
                if watch.feed(now, threads):
                    self._interrupt(Verdict.DEADLOCK.value, now, threads)
                    self.child_record.detail = judge.describe_deadlock(threads)
                    continue
            if now > end and self.interrupted_for is None:
                self._interrupt(Verdict.HANG.value, now, None)
                self.child_record.detail = f"not stopped or finished after {limit:g} s"
        if session.reached("version") and self.verdict_at is None:
            self.verdict_at = time.monotonic()  # the stop the debugger reported

    def _interrupt(self, why: str, now: float, threads) -> None:
        """Stop the child in the debugger: SIGINT, which the command file stops on."""
        self.interrupted_for = why
        self.verdict_at = now
        for thread in threads or []:
            if thread.syscall is not None:
                call = thread.syscall
                self.session.note(f"syscall {thread.tid}", f"{call.nr} {' '.join(call.args)}")
        self.session.note("interrupt", f"SIGINT: {why}")
        self.progress.stage("verdict", f"{why} (PID {self.child}) after "
                            f"{now - self.launched_at:.3f} s; interrupting it in "
                            f"{self.options.debugger}")
        batch.send(self.child, signal.SIGINT)

    def _capture(self) -> None:
        session = self.session
        assert session is not None
        name = self.options.debugger
        if session.wait(CAPTURE_TIMEOUT_S) is None:
            session.note("error", f"{name} did not finish within {CAPTURE_TIMEOUT_S:g} s")
        session.close()
        text = session.path.read_text(encoding="utf-8", errors="replace")
        info = self.driver.parse(text, self.driver.TRANSCRIPT_NAME)
        info.seconds = round(time.monotonic() - self.attach_started, 3)
        if not session.reached("done"):
            errors = session.errors()
            info.error = (f"{name} stopped at step {session.last_step or 'attach'}"
                          + (f": {errors[-1]}" if errors else ""))
        self.evidence.debugger = info
        self._judge(info)
        frames = sum(len(t.frames) for t in info.threads)
        self.progress.stage("debugger", f"{info.stop_reason or 'no stop'}; {len(info.threads)} "
                            f"thread(s), {frames} frames in {info.seconds:.2f} s")

    def _judge(self, info: ev.DebuggerInfo) -> None:
        from lab.parsers.document import CRASH_SIGNALS

        record = self.child_record
        assert record is not None
        stopped_by = info.signal if info.signal in CRASH_SIGNALS else None
        if stopped_by or (info.stop_reason or "").startswith("EXC_"):
            record.verdict = Verdict.CRASH.value
            record.signal = stopped_by
            where = f" at `{info.instruction}`" if info.instruction else ""
            said = f": \"{info.message}\"" if info.message else ""
            record.detail = f"stopped by {info.stop_reason} under {info.name}{where}{said}"
            self.progress.stage("verdict", f"crash (PID {self.child}): {record.detail}")
        elif self.interrupted_for:
            record.verdict = self.interrupted_for
        elif (info.stop_reason or "").startswith("exited"):
            clean = info.stop_reason in ("exited with status = 0", "exited normally")
            record.verdict = Verdict.OK.value if clean else Verdict.ERROR.value
            record.detail = f"{info.stop_reason} under {info.name}, without stopping"
        elif not batch.alive(self.child):
            record.detail = "ended; its exit status was not seen"
        self.evidence.verdict = record.verdict
        if self.verdict_at is not None:
            self.evidence.detect_s = round(self.verdict_at - self.launched_at, 4)
            self.evidence.timings["launch_to_verdict_s"] = self.evidence.detect_s
        self.evidence.timings["debugger_s"] = info.seconds
        self._write()

    # -- cleanup ----------------------------------------------------------------------------

    def _cleanup(self) -> None:
        """Debugger gone, child and parent killed and reaped, evidence written: always."""
        if self.session is not None:
            self.session.close()
        if self.child is not None and batch.alive(self.child):
            if self.child_record is not None:
                self.child_record.killed_by_lab = True
            # SIGCONT first: a stopped process cannot act on SIGKILL's wake-up otherwise.
            for signum in (signal.SIGCONT, signal.SIGKILL):
                batch.send(self.child, signum)
        if self.host is not None:
            self._end_host()
        self._read_reports()
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.evidence.stages = list(self.progress.stages)
        self.evidence.complete = True
        self._write()
        self.rundir.write_summary(self.evidence)
        self.progress.stage("evidence", f"{self.rundir.path}/evidence.json")

    def _end_host(self) -> None:
        host = self.host
        record = self.evidence.processes[0]
        try:
            host.wait(timeout=EXIT_TIMEOUT_S)  # it reaps its child, then returns
        except subprocess.TimeoutExpired:
            record.killed_by_lab = True
            for signum in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(host.pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass
            host.wait(timeout=EXIT_TIMEOUT_S)
            try:  # the orphaned child, where it was re-parented to us (a subreaper)
                os.waitpid(self.child or -1, os.WNOHANG)
            except ChildProcessError:
                pass
        record.exit_code = host.returncode
        if self._tee is not None:
            self._tee.join(OUTPUT_DRAIN_S)
        if host.stdout is not None and not (self._tee and self._tee.is_alive()):
            host.stdout.close()

    # -- reports, output, evidence ----------------------------------------------------------

    def _read_reports(self) -> None:
        """Fold the scenario's reports (threads at fork, warnings) into the evidence."""
        if self.channel is None:
            return
        for report in self.channel.read():
            if report.get("event") == "fork" and self.evidence.parent.pid is None:
                self.evidence.parent = reports.parent_info(report)
                names = [t.name for t in self.evidence.parent.threads_at_fork]
                self.progress.stage("fork", f"PID {report['pid']} forked; threads the child "
                                    f"does not inherit: {', '.join(names) or 'none'}")
            elif report.get("event") == "warning":
                self.evidence.warnings.append(report)

    def _tee_output(self) -> None:
        assert self.host is not None and self.host.stdout is not None
        tee_output(self.host.stdout, self.rundir.path / "output.txt", self.options.echo_output)

    def _write(self) -> None:
        self.rundir.write_evidence(self.evidence)


def _stopped_descendant(pid: int) -> int | None:
    """A descendant of ``pid`` in state T (stopped by a signal), or None."""
    for kid in _descendants(pid):
        state = batch.proc_state(kid)
        if state is not None and state[0] == "T":
            return kid
    return None


def _descendants(pid: int) -> list[int]:
    if sys.platform.startswith("linux"):
        from lab.linux import procfs

        found, frontier = [], [pid]
        while frontier:
            try:
                kids = sorted(procfs.children(frontier.pop()))
            except procfs.Gone:
                continue
            found.extend(kids)
            frontier.extend(kids)
        return found
    try:  # macOS and other systems without /proc: one ps(1) listing
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True,
                             timeout=batch.EXIT_TIMEOUT_S).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    parent_of = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            parent_of[int(fields[0])] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = sorted(p for p, pp in parent_of.items() if pp == parent)
        found.extend(kids)
        frontier.extend(kids)
    return found
