"""``celery-chromadb`` for one pool and fix: a catalog run like any other (``lab.runner``)."""

from __future__ import annotations

import json
from pathlib import Path

from lab import celery_lab
from lab.evidence import Evidence
from lab.options import RunOptions
from lab.progress import Progress


def run_celery(pool: str, fix: str = "none", options: RunOptions | None = None,
               progress: Progress | None = None) -> Evidence:
    """Run the Celery worker once under ``pool`` with ``fix``; return its evidence.

    Raises BadInput (unknown pool or fix), MissingPackage (celery, gevent or eventlet not
    installed), or any LabError of the watch; the evidence collected so far is then attached
    to the error, and what Celery reported is in the evidence directory all the same.
    """
    from lab.celery_lab.catalog import CELERY
    from lab.runner import run_scenario

    return run_scenario(celery_lab.SCENARIO, CELERY.launcher_for(pool, fix), options, progress)


def celery_report(evidence: Evidence | dict) -> dict:
    """Return the ``celery.json`` written next to ``evidence`` (empty when there is none)."""
    folder = evidence["evidence_dir"] if isinstance(evidence, dict) else evidence.evidence_dir
    try:
        return json.loads((Path(folder) / "celery.json").read_text())
    except (FileNotFoundError, TypeError, ValueError):
        return {}
