"""The runs in progress on this machine, so that what a killed lab left behind can be finished.

``kill -9`` is the one fault the lab cannot handle itself: its cleanup never runs. The root
of its tree dies with it (PR_SET_PDEATHSIG), but grandchildren run on under PID 1, the report
channel's temporary directory stays, and evidence.json says the run is still going. Each
session therefore registers its run here (the lab's PID and start time, the evidence and temp
directories) and unregisters it at the end. ``cleanup()`` — ``python -m lab cleanup``, and
the start of every lab command — finds runs whose lab is gone, stops what is left of them (by
the run's marker, ``LAB_RUN_ID``, in their environment), removes their temp directories and
marks their evidence ``interrupted``, with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab import evidence as ev, process
from lab.rundir import RunDir

GONE_DEADLINE_S = 5.0  # SIGKILLed leftovers leaving the process table (or becoming zombies)
POLL_S = 0.02


def registry() -> Path:
    """This user's directory of runs in progress."""
    base = os.environ.get("LAB_RUNS_DIR") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), f"fork-crash-lab-{_user()}")
    return Path(base)


def _user() -> str:
    """The uid on POSIX; the login name on Windows, whose temp directory is the user's own."""
    if hasattr(os, "getuid"):
        return str(os.getuid())
    import getpass

    return getpass.getuser()


@dataclass
class RunEntry:
    run_id: str
    lab_pid: int
    lab_started: str  # the lab's start time as the OS reports it: a reused PID differs
    evidence_dir: str
    temp_dirs: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return registry() / f"{self.run_id}.json"


def register(run_id: str, evidence_dir: Path, temp_dirs: list[Path]) -> RunEntry:
    entry = RunEntry(run_id=run_id, lab_pid=os.getpid(),
                     lab_started=process.start_marker(os.getpid()) or "",
                     evidence_dir=str(evidence_dir), temp_dirs=[str(d) for d in temp_dirs])
    try:
        entry.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        ev.write_atomic(entry.path, json.dumps(asdict(entry)))
    except OSError:
        pass  # no registry: the run goes on; only a kill -9 would leave more behind
    return entry


def unregister(entry: RunEntry) -> None:
    entry.path.unlink(missing_ok=True)


@dataclass
class Cleaned:
    run_id: str
    evidence_dir: str
    stopped: list[int]


def cleanup() -> list[Cleaned]:
    """Finish every registered run whose lab is gone; return what was done."""
    done = []
    try:
        paths = sorted(registry().glob("*.json"))
    except OSError:
        return done
    for path in paths:
        try:
            entry = RunEntry(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)  # a torn entry of a run that cannot be found anyway
            continue
        if process.start_marker(entry.lab_pid) == entry.lab_started:
            continue  # its lab still runs (and cleans up after itself)
        done.append(_finish(entry))
    return done


def _finish(entry: RunEntry) -> Cleaned:
    reader = process.backend()
    left = reader.marked(entry.run_id)
    for action in ("resume", "kill"):
        for pid in left:
            reader.signal(pid, action)
    end = time.monotonic() + GONE_DEADLINE_S
    while any(process.alive(pid) for pid in left) and time.monotonic() < end:
        process.reap_children()
        time.sleep(POLL_S)  # waiting on a process state, with a deadline
    process.reap_children()
    for directory in entry.temp_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    _mark_interrupted(entry, left)
    unregister(entry)
    return Cleaned(entry.run_id, entry.evidence_dir, left)


def _mark_interrupted(entry: RunEntry, stopped: list[int]) -> None:
    which = f": {', '.join(map(str, stopped))}" if stopped else ""
    RunDir.existing(Path(entry.evidence_dir)).mark_interrupted(
        lambda after: f"the lab (PID {entry.lab_pid}) ended without cleaning up (killed with "
                      f"SIGKILL, or it crashed){after}; `lab cleanup` stopped {len(stopped)} "
                      f"process(es) it left{which}")
