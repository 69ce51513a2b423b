"""Celery on an embedded broker: the prefork + ChromaDB hang, the pools that work, the fixes.

A real Celery worker (kombu's filesystem transport, a ``file://`` result backend, both in a
per-run directory: no server, no network, no API key) runs one ChromaDB query task. Which
pool runs it and where the task module creates its ChromaDB client (``fix``) decide whether
the pool child deadlocks.

Nothing here imports Celery or ChromaDB at import time: the catalog below is usable (and
``missing()`` can say what to install) on a machine without them.
"""

from __future__ import annotations

import importlib.util
import os

SCENARIO = "celery-chromadb"
POOLS = ("prefork", "solo", "threads", "gevent", "eventlet")
FIXES = ("none", "worker-process-init", "lazy")
# Celery sends worker_process_init in each prefork child, and once in a solo worker's only
# process; threads, gevent and eventlet never send it, so that fix cannot run under them.
WORKER_PROCESS_INIT_POOLS = ("prefork", "solo")

# The task's own time limits (Celery enforces them only under prefork and gevent/eventlet):
# the soft limit raises SoftTimeLimitExceeded inside the task, the hard limit SIGKILLs the
# pool child. Values from the environment override these (the worker and the driver read the
# same variables), so a user can try the production values they run with.
SOFT_TIME_LIMIT_S = 10.0
HARD_TIME_LIMIT_S = 20.0

TASK_NAME = "lab.celery_lab.query"
COLLECTION = "docs"
DOCUMENTS = {
    "fork": "fork() copies one thread and all of memory, locks included",
    "futex": "a futex wait with no timeout sleeps until another thread wakes it",
    "tokio": "the Tokio runtime runs tasks on a pool of worker threads",
    "celery": "a prefork pool forks its children from the worker's main process",
}
# The query is a document's exact text: with the hash embedding its nearest neighbour is that
# document (distance 0), so the right answer is known in advance.
QUERY_ID = "tokio"

ENV_DIR = "LAB_CELERY_DIR"  # the run directory: broker folders, results, ChromaDB, logs
ENV_FIX = "LAB_CELERY_FIX"
ENV_SOFT = "LAB_CELERY_SOFT_S"
ENV_HARD = "LAB_CELERY_HARD_S"
ENV_EVENT_FD = "LAB_CELERY_EVENT_FD"  # the driver's end of the worker's event pipe
ENV_BROKER_URL = "LAB_CELERY_BROKER_URL"  # optional: a real broker (e.g. redis://redis:6379/0)
ENV_RESULT_BACKEND = "LAB_CELERY_RESULT_BACKEND"


def time_limits() -> tuple[float, float]:
    """Return (soft, hard) seconds: the environment's values, else the defaults above."""
    return (float(os.environ.get(ENV_SOFT) or SOFT_TIME_LIMIT_S),
            float(os.environ.get(ENV_HARD) or HARD_TIME_LIMIT_S))


def expected(pool: str, fix: str) -> str:
    """The verdict the lab must observe: only prefork with the client made in the parent hangs."""
    return "deadlock" if (pool, fix) == ("prefork", "none") else "ok"


def launcher_name(pool: str, fix: str) -> str:
    return f"celery-{pool}" if fix == "none" else f"celery-{pool}-{fix}"


def missing(pool: str) -> list[str]:
    """The pip requirements missing here for ``pool`` (empty when it can run)."""
    needs = ["celery>=5.4,<6"] if importlib.util.find_spec("celery") is None else []
    if importlib.util.find_spec("chromadb") is None:
        needs.append("chromadb")
    if pool in ("gevent", "eventlet") and importlib.util.find_spec(pool) is None:
        needs.append(pool)
    return needs


def combinations() -> list[tuple[str, str]]:
    """Every (pool, fix) the matrix runs: each pool as the field writes it, then the fixes."""
    return [(pool, "none") for pool in POOLS] + [("prefork", fix) for fix in FIXES[1:]]
