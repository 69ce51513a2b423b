"""``lab run``: one catalog entry under one launcher, watched, judged against its expectation."""

from __future__ import annotations

from lab import scenarios
from lab.evidence import Evidence
from lab.options import RunOptions
from lab.progress import Progress, shown
from lab.watch.watcher import watch


def run_scenario(name: str, launcher: str | None = None, options: RunOptions | None = None,
                 progress: Progress | None = None, python: str | None = None) -> Evidence:
    """Run entry ``name`` once under ``launcher`` (its default when None); return its evidence.

    ``python``: another interpreter to run a scenario in (e.g. a CPython 3.12 to see its fork
    DeprecationWarning); it must be able to import the scenario's packages. Raises LabError:
    BadInput and MissingPackage before anything runs.
    """
    entry = scenarios.get(name)
    target = entry.target(launcher or entry.default_launcher, python)
    return watch(target, options or RunOptions(), progress)


def mismatch(evidence: Evidence) -> str | None:
    """None when the observed verdict is the expected one; else the one line that says not."""
    if evidence.verdict == evidence.expected:
        return None
    return (f"observed {evidence.verdict}, expected {evidence.expected} "
            f"(evidence: {shown(evidence.evidence_dir)})")
