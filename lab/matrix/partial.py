"""A partial matrix run (``--only``, fewer ``--trials``) merges into its platform's results file
cell by cell: the cells it ran replace theirs, every other measured cell keeps its own trials,
date and versions, and the runs those cells came from stay listed in the file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lab import matrix


def cell_versions(requires: tuple[str, ...], packages: dict[str, str]) -> dict[str, str]:
    """The versions of the packages a cell's scenario imports, from a platform's packages."""
    return {name: packages[name] for name in requires if name in packages}


def previous(path: Path, platform_id: str) -> tuple[dict[str, dict], list[dict]]:
    """(measured rows by ``scenario/launcher``, the runs they came from) of the results file at
    ``path``; nothing when there is none. A file written before rows carried their own run
    gets its run's date and its platform's versions. Raises BadInput for a file that is not a
    results file of this platform (it is never overwritten silently)."""
    from lab import scenarios
    from lab.errors import BadInput, LabError
    from lab.matrix.merge import load

    if not Path(path).is_file():
        return {}, []
    doc = load(path)
    if doc["platform"]["id"] != platform_id:
        raise BadInput(f"{path} holds platform {doc['platform']['id']}, not {platform_id}")
    runs = list(doc.get("runs") or ([doc["run"]] if doc.get("run") else []))
    started = (doc.get("run") or {}).get("started")
    packages = doc["platform"].get("packages") or {}
    rows = {}
    for row in doc["rows"]:
        if not matrix.measured(row):
            continue
        if "ran" not in row:
            try:
                requires = tuple(scenarios.get(row["scenario"]).requires)
            except LabError:  # a cell the catalog no longer has
                requires = ()
            row = {**row, "ran": started, "python": doc["platform"].get("python"),
                   "packages": cell_versions(requires, packages)}
        rows[f"{row['scenario']}/{row['launcher']}"] = row
    return rows, runs


def runs_in_use(runs: list[dict], rows: list[dict]) -> list[dict]:
    """The runs at least one row came from, oldest first, each with its number of cells."""
    used = Counter(row.get("ran") for row in rows if row.get("ran"))
    kept = {run["started"]: {**run, "cells": used[run["started"]]} for run in runs
            if run.get("started") in used}
    return sorted(kept.values(), key=lambda run: run["started"])
