"""Drive one real Celery worker through one ChromaDB query task, then stop and reap it.

Usage::

    python -m lab.celery_lab.drive --pool prefork --fix none

Seeds a ChromaDB collection in the run directory, starts ``celery -A lab.celery_lab.app
worker --pool POOL --concurrency 1`` as a subprocess, waits for its ``worker_ready`` line on a
pipe (a handshake, not a sleep), sends one query task, and waits for the result as long as the
task's own hard time limit allows (plus a grace). It prints what Celery reported, writes it to
``celery.json`` in the run directory, stops the worker (warm shutdown, then cold, then SIGKILL,
each with a deadline) and reaps every process it started, on every exit path: a result, a
timeout, an exception, SIGTERM, SIGINT or SIGHUP.

Exit status: 0 when the result came back and is right; 1 when Celery reported a failure or a
wrong result; 3 when the worker did not start; 4 when no result came back in time;
128 + N when signal N stopped the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import process
from lab.celery_lab import (
    COLLECTION,
    DOCUMENTS,
    ENV_DIR,
    ENV_EVENT_FD,
    ENV_FIX,
    ENV_HARD,
    ENV_SOFT,
    FIXES,
    POOLS,
    QUERY_ID,
    TASK_NAME,
    WORKER_PROCESS_INIT_POOLS,
    time_limits,
)
from lab.linux import prctl

REPO = Path(__file__).resolve().parents[2]

# Named waits.
STARTUP_TIMEOUT_S = 120.0  # worker start to worker_ready: Celery + ChromaDB on 2 busy cores
RESULT_GRACE_S = 10.0  # past the hard time limit, Celery must have reported by then
WARM_SHUTDOWN_S = 15.0  # SIGTERM: the worker finishes its task and exits by itself
COLD_SHUTDOWN_S = 3.0  # SIGQUIT: the worker exits at once, without waiting for the task
KILL_DEADLINE_S = 10.0  # SIGKILL: the kernel has to be done by then
POLL_S = 0.05  # how often the result backend (a file) is read while waiting

EXIT_OK, EXIT_WRONG, EXIT_NO_WORKER, EXIT_NO_RESULT = 0, 1, 3, 4

# Lines of the worker's log that say what Celery itself did about the task.
_CELERY_WORDS = re.compile(r"^\[.*(time limit|SIGKILL|WorkerLost|exited with|TimeLimitExceeded|"
                           r"succeeded in|raised unexpected|: ERROR/|: CRITICAL/)",
                           re.IGNORECASE)


class Stopped(BaseException):
    """A signal asked the driver to stop (a BaseException, like KeyboardInterrupt, so that no
    library's ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def say(message: str) -> None:
    try:
        print(f"drive: {message}", flush=True)
    except OSError:
        pass  # whoever read our output is gone; the cleanup must go on regardless


def seed(directory: Path) -> None:
    """Create the collection the task queries (in this process: the worker's parent never sees
    this client, only the files it leaves)."""
    import chromadb
    from chromadb.config import Settings

    from lab.scenarios.embeddings import HashEmbedding

    client = chromadb.PersistentClient(path=str(directory / "chroma"),
                                       settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection(COLLECTION, embedding_function=HashEmbedding())
    collection.upsert(ids=list(DOCUMENTS), documents=list(DOCUMENTS.values()))
    say(f"seeded {collection.count()} documents in {directory / 'chroma'}")


class Driver:
    """One worker, one task. ``run`` returns the exit status; ``stop_worker`` always cleans up."""

    def __init__(self, pool: str, fix: str, directory: Path, loglevel: str = "INFO"):
        self.pool, self.fix, self.directory, self.loglevel = pool, fix, directory, loglevel
        self.soft_s, self.hard_s = time_limits()
        self.started = time.monotonic()
        self.worker: subprocess.Popen | None = None
        self.events_r: int | None = None
        self._buffer = b""
        self.events: list[dict] = []
        self.task_done = False
        self.stopping = False  # set at the first signal, and once the run is over
        self.hurry = False  # a signal during the cleanup: skip the shutdown grace
        self.report: dict = {"pool": pool, "fix": fix, "soft_time_limit_s": self.soft_s,
                             "hard_time_limit_s": self.hard_s, "state": None, "result": None,
                             "reported": None, "worker_pid": None, "task_pid": None,
                             "task_s": None, "log": []}

    @property
    def log_path(self) -> Path:
        return self.directory / "worker.log"

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        seed(self.directory)
        self.start_worker()
        ready = self.wait_for("ready", STARTUP_TIMEOUT_S)
        if ready is None:
            return self.finish(EXIT_NO_WORKER, "nothing: the worker did not become ready "
                               f"within {STARTUP_TIMEOUT_S:g} s" + self._worker_gone())
        pool_children = sorted({e["pid"] for e in self.events
                                if e["event"] == "pool-child" and e["pid"] != self.worker.pid})
        say(f"worker {self.worker.pid} ready after {self.elapsed():.2f} s"
            + (f"; pool children so far: {pool_children}" if pool_children else ""))
        from lab.celery_lab.app import app

        sent_at = time.monotonic()
        result = app.send_task(TASK_NAME, args=[DOCUMENTS[QUERY_ID], 1])
        say(f"task {result.id} sent: query the text of document {QUERY_ID!r}; soft time limit "
            f"{self.soft_s:g} s, hard {self.hard_s:g} s")
        deadline = sent_at + self.hard_s + RESULT_GRACE_S
        while time.monotonic() < deadline:
            self.read_events(POLL_S)
            if result.ready():
                break
            if self.worker.poll() is not None:
                return self.finish(EXIT_NO_RESULT, "nothing: the worker exited with "
                                   f"{self.worker.returncode} before the result came back")
        else:
            return self.finish(EXIT_NO_RESULT, f"nothing within {deadline - sent_at:g} s (the "
                               f"hard time limit is {self.hard_s:g} s)")
        self.task_done = True
        self.report["task_s"] = round(time.monotonic() - sent_at, 3)
        self.report["state"] = result.state
        value = result.get(propagate=False, timeout=RESULT_GRACE_S)
        if result.successful():
            self.report["result"] = value
            ids = value["ids"]
            right = bool(ids) and ids[0] == QUERY_ID
            text = (f"SUCCESS {ids} from PID {value['pid']} in {self.report['task_s']:.2f} s"
                    + ("" if right else f" (wrong: expected {QUERY_ID!r} first)"))
            return self.finish(EXIT_OK if right else EXIT_WRONG, text)
        name, text = type(value).__name__, str(value)
        error = text if text.startswith(name) else f"{name}({text})"
        self.report["result"] = f"{name}: {text}"
        return self.finish(EXIT_WRONG, f"{result.state} {error} after "
                           f"{self.report['task_s']:.2f} s")

    def finish(self, status: int, reported: str) -> int:
        """Record the outcome; ``write_report`` completes it once the worker is stopped."""
        self.report["exit_status"] = status
        self.report["reported"] = reported
        return status

    def write_report(self) -> None:
        """Add what the worker's log says (its last lines come at shutdown), save, print."""
        if self.report["reported"] is None:
            return  # stopped before there was anything to report
        self.read_events(0)
        starts = [e for e in self.events if e["event"] == "task-start"]
        if starts:
            self.report["task_pid"] = starts[0]["pid"]
        self.report["log"] = self._celery_lines()
        if self.report["state"] not in (None, "SUCCESS"):
            self.report["reported"] += self._limits_said()
        (self.directory / "celery.json").write_text(json.dumps(self.report, indent=2) + "\n")
        say(f"celery reported: {self.report['reported']}")
        for line in self.report["log"]:
            say(f"  worker log: {line}")

    def _limits_said(self) -> str:
        """What Celery's log says its time limits did (the field's symptom, in its words)."""
        text = "\n".join(self.report["log"])
        parts = []
        if re.search(r"soft time limit .* exceeded", text, re.IGNORECASE):
            parts.append(f"the soft time limit ({self.soft_s:g} s) was logged but did not stop "
                         "the task")
        if re.search(r"hard time limit .* exceeded", text, re.IGNORECASE):
            killed = re.search(r"pid:(\d+) exited with 'signal 9 \(SIGKILL\)'", text)
            parts.append(f"the hard time limit ({self.hard_s:g} s) killed the pool child"
                         + (f" (PID {killed.group(1)}) with SIGKILL" if killed else ""))
        return "".join(f"; {part}" for part in parts)

    def _worker_gone(self) -> str:
        if self.worker is not None and self.worker.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            return f"; it exited with {self.worker.returncode}: " + " | ".join(tail)
        return ""

    def _celery_lines(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line.strip() for line in text.splitlines() if _CELERY_WORDS.search(line)][:20]

    # -- the worker -------------------------------------------------------------------------

    def start_worker(self) -> None:
        self.events_r, events_w = os.pipe()
        env = dict(os.environ)
        env.update({ENV_DIR: str(self.directory), ENV_FIX: self.fix, ENV_EVENT_FD: str(events_w),
                    ENV_SOFT: str(self.soft_s), ENV_HARD: str(self.hard_s),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                env.get("PYTHONPATH")]))})
        argv = [sys.executable, "-m", "celery", "-A", "lab.celery_lab.app", "worker",
                "--pool", self.pool, "--concurrency", "1", "--loglevel", self.loglevel,
                "--hostname", f"lab-{self.pool}@%h", "--without-heartbeat", "--without-gossip",
                "--without-mingle"]
        log = open(self.log_path, "ab")
        try:
            self.worker = subprocess.Popen(argv, env=env, pass_fds=(events_w,),
                                           stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, cwd=str(REPO))
        finally:
            log.close()
            os.close(events_w)
        self.report["worker_pid"] = self.worker.pid
        say(f"worker {self.worker.pid} started: celery worker --pool {self.pool} "
            f"--concurrency 1 (fix: {self.fix}; log: {self.log_path})")

    def read_events(self, timeout: float) -> None:
        if self.events_r is None:
            if timeout:
                time.sleep(timeout)  # the pipe is closed: only the poll interval is left
            return
        readable, _, _ = select.select([self.events_r], [], [], timeout)
        if not readable:
            return
        chunk = os.read(self.events_r, 65536)
        if not chunk:
            os.close(self.events_r)
            self.events_r = None
            return
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            if event["event"] == "task-start":
                say(f"task started in PID {event['pid']} (parent {event['ppid']})")
            elif event["event"] == "client":
                say(f"ChromaDB client opened in PID {event['pid']}: {event['where']}")

    def wait_for(self, name: str, limit: float) -> dict | None:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            for event in self.events:
                if event["event"] == name:
                    return event
            if self.worker.poll() is not None or self.events_r is None:
                return None
            self.read_events(min(POLL_S * 4, max(0.0, end - time.monotonic())))
        return None

    def stop_worker(self) -> None:
        """Warm shutdown when the task is done, else cold; then SIGKILL every process left under
        this one (the worker's children come back to us, a subreaper, if it dies first); reap.

        A signal during this only sets ``hurry``: the shutdown grace is skipped, the kill is not.
        """
        if self.worker is not None and self.worker.poll() is None and not self.hurry:
            how, sig, grace = (("warm", signal.SIGTERM, WARM_SHUTDOWN_S) if self.task_done else
                               ("cold", signal.SIGQUIT, COLD_SHUTDOWN_S))
            tree = [self.worker.pid, *process.descendants(self.worker.pid)]
            say(f"stopping worker {self.worker.pid} ({how} shutdown, {sig.name}); "
                f"its processes: {tree}")
            self.worker.send_signal(sig)
            self._wait_gone(tree, grace)
        left = [pid for pid in process.descendants(os.getpid()) if process.alive(pid)]
        if left:
            say(f"killing what is left: {sorted(left)}")
            for sig in (signal.SIGCONT, signal.SIGKILL):
                for pid in left:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            self.hurry = False  # the kill deadline is the kernel's, not to be skipped
            self._wait_gone(left, KILL_DEADLINE_S, reaped=True)
        self._reap()
        if self.worker is not None and self.worker.returncode is not None:
            say(f"worker {self.worker.pid} ended with {self.worker.returncode}")
        if self.events_r is not None:
            os.close(self.events_r)
            self.events_r = None

    def _reap(self) -> None:
        """Reap every child that has ended; the worker's status goes to its Popen."""
        for pid, status in process.reap_children():
            if self.worker is not None and pid == self.worker.pid:
                self.worker.returncode = os.waitstatus_to_exitcode(status)

    def _wait_gone(self, pids: list[int], limit: float, reaped: bool = False) -> None:
        """Until none of ``pids`` runs; with ``reaped``, until none is even a zombie: a pool
        child re-parented to us (a subreaper) when the worker died must be reaped here, not
        left to whoever adopts it when we exit."""
        end = time.monotonic() + limit
        still = (lambda pid: process.state(pid) is not None) if reaped else process.alive
        while time.monotonic() < end and not self.hurry:
            self._reap()
            if not any(still(pid) for pid in pids):
                return
            time.sleep(POLL_S)  # polling a state with a deadline, not synchronisation


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.celery_lab.drive",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", choices=POOLS, default="prefork")
    parser.add_argument("--fix", choices=FIXES, default="none")
    parser.add_argument("--dir", help=f"run directory (default: ${ENV_DIR}, else a new temporary "
                        "directory removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep a temporary run directory")
    parser.add_argument("--loglevel", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.fix == "worker-process-init" and args.pool not in WORKER_PROCESS_INIT_POOLS:
        _parser().error(f"--fix {args.fix} needs --pool prefork or solo (Celery sends "
                        f"worker_process_init only there, never under {args.pool})")
    given = args.dir or os.environ.get(ENV_DIR)
    directory = Path(given or tempfile.mkdtemp(prefix="lab-celery-")).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_DIR] = str(directory)  # lab.celery_lab.app reads it at import
    prctl.set_child_subreaper()  # the worker's children come back to us if it dies first

    driver = Driver(args.pool, args.fix, directory, args.loglevel)

    def on_signal(signum, _frame):
        if driver.stopping:
            driver.hurry = True  # another signal while stopping: skip the grace, kill now
            return
        driver.stopping = True
        raise Stopped(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    status = EXIT_NO_RESULT
    try:
        status = driver.run()
    except Stopped as exc:
        say(f"{exc}: stopping the worker")
        status = 128 + exc.signum
    finally:
        try:
            driver.stopping = True  # from here on a signal only hurries the cleanup
        except Stopped as exc:  # the first signal landed just before that line
            status = 128 + exc.signum
        driver.stop_worker()
        driver.write_report()
        if not given and not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    return status

if __name__ == "__main__":
    sys.exit(main())
