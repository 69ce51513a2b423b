"""The Celery app: kombu's filesystem broker and a file result backend in the run directory.

``celery -A lab.celery_lab.app worker`` reads the run directory from ``LAB_CELERY_DIR``. No
server is needed: messages are files under ``broker/``, results are files under ``results/``.
``LAB_CELERY_BROKER_URL`` and ``LAB_CELERY_RESULT_BACKEND`` swap in a real broker and backend
(e.g. ``redis://localhost:6379/0``) for the production shape; the lab never needs them.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

from lab.celery_lab import ENV_BROKER_URL, ENV_DIR, ENV_RESULT_BACKEND

# kombu's virtual transports sleep this long between two empty polls of the queue folder
# (default 1 s); it bounds how long a sent task waits before the worker sees it.
POLLING_INTERVAL_S = 0.05
# How long a prefork child may take to boot (worker_process_init included) before Celery
# gives up on it. The default, 4 s, is short for a ChromaDB client on a loaded 2-core machine.
PROC_ALIVE_TIMEOUT_S = 60.0
EMBEDDED_TRANSPORT = "lab.celery_lab.transport:Transport"


def run_dir() -> Path:
    """The run directory named by ``LAB_CELERY_DIR``; raises RuntimeError when it is unset."""
    value = os.environ.get(ENV_DIR)
    if not value:
        raise RuntimeError(f"{ENV_DIR} is not set: run the worker through "
                           "`python -m lab.celery_lab.drive`, or export it to a directory")
    return Path(value).resolve()


def make_app(directory: Path) -> Celery:
    """Return a Celery app whose broker and result backend live under ``directory``."""
    broker = directory / "broker"
    for sub in ("queue", "processed", "control"):
        (broker / sub).mkdir(parents=True, exist_ok=True)
    (directory / "results").mkdir(parents=True, exist_ok=True)
    app = Celery("lab_celery", include=["lab.celery_lab.tasks"])
    real_broker = os.environ.get(ENV_BROKER_URL)
    app.conf.update(
        broker_url=real_broker or "filesystem://",
        # kombu's own filesystem transport can hand the worker a half-written message.
        broker_transport=None if real_broker else EMBEDDED_TRANSPORT,
        broker_transport_options={
            # One folder for both ends: what the driver writes is what the worker reads.
            "data_folder_in": str(broker / "queue"),
            "data_folder_out": str(broker / "queue"),
            "processed_folder": str(broker / "processed"),
            "control_folder": str(broker / "control"),
            "store_processed": False,
            "polling_interval": POLLING_INTERVAL_S,
        },
        result_backend=os.environ.get(ENV_RESULT_BACKEND) or f"file://{directory / 'results'}",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        # No broadcast traffic: remote control, events, gossip and mingle are not what is
        # under test, and mingle alone waits a second at startup for replies nobody sends.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        worker_proc_alive_timeout=PROC_ALIVE_TIMEOUT_S,
    )
    return app


app = make_app(run_dir())
