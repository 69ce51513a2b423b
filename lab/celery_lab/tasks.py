"""The task under test, a ChromaDB query, with the client created where ``LAB_CELERY_FIX`` says.

- ``none`` (the field's code): the client is created when this module is imported, in the
  worker's main process, before the prefork pool forks its children. The child inherits the
  client, the Tokio runtime's and sqlx's locks, but none of their threads: its query waits on
  a futex forever.
- ``worker-process-init``: the client is created in a ``worker_process_init`` handler, which
  Celery runs in each pool child after the fork. The main process never opens ChromaDB.
- ``lazy``: the client is created on first use, once per process (keyed on the pid).

Each step is reported as a JSON line (see ``emit``) so that the driver and the lab know when
the worker was ready, when and where the task started, and where the client was created.
"""

from __future__ import annotations

import json
import os
import time

import chromadb  # imported in the main process under every fix: importing starts no runtime
from celery.signals import task_prerun, worker_process_init, worker_ready
from chromadb.config import Settings

from lab.celery_lab import COLLECTION, ENV_EVENT_FD, ENV_FIX, FIXES, TASK_NAME, time_limits
from lab.celery_lab.app import app, run_dir
from lab.scenarios.embeddings import HashEmbedding

FIX = os.environ.get(ENV_FIX, "none")
if FIX not in FIXES:
    raise RuntimeError(f"{ENV_FIX}={FIX!r}: expected one of {', '.join(FIXES)}")
SOFT_S, HARD_S = time_limits()
MAIN_PID = os.getpid()  # the worker's main process imports this module; pool children fork


def emit(event: str, **fields) -> None:
    """Append one JSON line to ``events.jsonl`` in the run directory and to the driver's pipe.

    Lines are single ``write`` calls under PIPE_BUF (O_APPEND), so concurrent writers (the main
    process and its pool children) never interleave.
    """
    line = json.dumps({"event": event, "pid": os.getpid(), "ppid": os.getppid(),
                       "t_ns": time.monotonic_ns(), **fields}).encode() + b"\n"
    fd = os.open(run_dir() / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    pipe = os.environ.get(ENV_EVENT_FD)
    if pipe:
        try:
            os.write(int(pipe), line)
        except OSError:
            pass  # the driver went away (or this fd was closed in a child); the file has it


def _report_forks_to_lab() -> None:
    """Under the lab, report the main process's threads at each fork: the pool child gets
    none of them."""
    from lab import reports

    if reports.active():
        os.register_at_fork(before=reports.send_fork)


class _Client:
    """The process's ChromaDB collection, and the pid that opened it."""

    collection = None
    pid: int | None = None

    @classmethod
    def open(cls, where: str) -> None:
        client = chromadb.PersistentClient(path=str(run_dir() / "chroma"),
                                           settings=Settings(anonymized_telemetry=False))
        cls.collection = client.get_collection(COLLECTION, embedding_function=HashEmbedding())
        cls.pid = os.getpid()
        emit("client", where=where)

    @classmethod
    def get(cls):
        if FIX == "lazy" and cls.pid != os.getpid():
            cls.open(f"lazy, on first use, in {_which_process()}")
        if cls.collection is None:
            raise RuntimeError(f"no ChromaDB client in PID {os.getpid()} (fix {FIX!r}: "
                               "worker_process_init runs only in prefork children)")
        return cls.collection


@worker_ready.connect
def _ready(**_kwargs) -> None:
    emit("ready", fix=FIX)


def _which_process() -> str:
    return "the pool child" if os.getpid() != MAIN_PID else "the worker's main process"


@worker_process_init.connect
def _child_started(**_kwargs) -> None:
    # Sent in each prefork child, and once in a solo worker's main process.
    emit("pool-child" if os.getpid() != MAIN_PID else "process-init")
    if FIX == "worker-process-init":
        _Client.open(f"worker_process_init, in {_which_process()}")


@task_prerun.connect
def _task_started(task_id=None, **_kwargs) -> None:
    emit("task-start", task_id=task_id)


@app.task(name=TASK_NAME, soft_time_limit=SOFT_S, time_limit=HARD_S)
def query(text: str, n_results: int = 1) -> dict:
    """Query the collection; return the ids found and the pid that ran the query."""
    found = _Client.get().query(query_texts=[text], n_results=n_results)
    return {"ids": found["ids"][0], "pid": os.getpid(), "ppid": os.getppid()}


_report_forks_to_lab()
if FIX == "none":
    # The bug as the field writes it: a module-level client, made in the main process.
    _Client.open("module import, in the worker's main process")
