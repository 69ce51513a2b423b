"""``lab matrix merge``: combine platform results files; unrun platforms say so, never guess."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lab import matrix
from lab.errors import BadInput
from lab.matrix.compare import differences
from lab.matrix.recorded import MACOS_TRAP, recorded_row

MERGED_SCHEMA = "lab-matrix-merged/1"
NOT_RUN_HERE = "not run here"
# "-portable": a Linux run on the portable backend (LAB_BACKEND=portable, lab.envinfo)
PLATFORM_FILE = re.compile(r"^[a-z0-9_]+-[a-z0-9_]+-py\d+\.\d+(?:-portable)?\.json$")
ROW_FIELDS = ("scenario", "launcher", "expected", "status", "counts")


class NotResults(BadInput):
    """Valid JSON, but another tool's file (results/ also holds e.g. soak reports)."""


def load_all(paths: list[Path], skipped: list[str]) -> list[tuple[Path, dict]]:
    """Load the results files among ``paths``; other tools' JSON files are skipped (why goes
    to ``skipped``). Raises BadInput for an unreadable file or when none is a results file."""
    docs = []
    for path in paths:
        try:
            docs.append((Path(path), load(path)))
        except NotResults as exc:
            skipped.append(str(exc))
    if not docs:
        raise BadInput(f"no `lab matrix` results file among {len(paths)} file(s)"
                       + (f": {skipped[0]}" if len(skipped) == 1 else ""))
    return docs


def load(path: Path) -> dict:
    """Read and check one results file; raises BadInput (one line) when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"no such results file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise BadInput(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != matrix.SCHEMA:
        raise NotResults(f"{path} is not a `lab matrix` results file (schema {matrix.SCHEMA})")
    platform = doc.get("platform")
    if not isinstance(platform, dict) or not platform.get("id"):
        raise BadInput(f"{path}: no platform id")
    rows = doc.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in
                                                                          ROW_FIELDS)
                                             for r in rows):
        raise BadInput(f"{path}: rows must be a list of cells with {', '.join(ROW_FIELDS)}")
    return doc


def platform_files(results_dir: Path) -> list[Path]:
    """The platform results files in ``results_dir`` (``<system>-<machine>-pyX.Y.json``)."""
    return sorted(p for p in Path(results_dir).glob("*.json") if PLATFORM_FILE.match(p.name))


def _not_run(platform_id: str) -> dict:
    system, machine, python = (platform_id.split("-") + ["", "", ""])[:3]
    return {"id": platform_id, "state": NOT_RUN_HERE, "platform": {
        "id": platform_id, "system": system, "machine": machine, "python": python[2:]},
        "run": None, "rows": [], "where": matrix.KNOWN_PLATFORMS.get(platform_id)}


def _add_recorded(platforms: list[dict], row: dict, family: str) -> None:
    """Put a recorded row in the first platform of its family, unless that cell ran there."""
    for entry in platforms:
        if not entry["id"].startswith(family + "-"):
            continue
        cells = {(r["scenario"], r["launcher"]): r for r in entry["rows"]}
        ran = cells.get((row["scenario"], row["launcher"]))
        if ran is not None and ran["status"] == matrix.RUN:
            return
        entry["rows"] = [r for r in entry["rows"]
                         if (r["scenario"], r["launcher"]) != (row["scenario"], row["launcher"])]
        entry["rows"].append(row)
        return


def _add_predictions(platforms: list[dict]) -> None:
    """A platform without a results file shows the verdicts the catalog predicts there where
    they differ from Linux's (a scenario's ``predicted``), each marked as a prediction: what
    the mechanism says, never an observation, until that platform's results file exists."""
    from lab import scenarios
    from lab.matrix.cells import all_cells

    for entry in platforms:
        if entry["state"] == "run":
            continue
        system = entry["platform"].get("system") or ""
        for cell in all_cells():
            predicted = getattr(scenarios.get(cell.scenario), "predicted", {})
            verdict = predicted.get(system, {}).get(cell.launcher)
            if verdict:
                entry["rows"].append({
                    "scenario": cell.scenario, "launcher": cell.launcher, "expected": verdict,
                    "status": matrix.PREDICTED, "counts": {}, "trials": 0, "rate": None,
                    "observed": None, "median_detect_s": None, "example": None,
                    "why": "predicted from the mechanism (docs/MACOS.md); no results file "
                           "from this platform records it yet"})


def grid(platforms: list[dict]) -> tuple[list[str], list[str], list[list[str]]]:
    """(scenarios, launchers, cells): the catalog's order, then any others as first seen; a
    cell is a [scenario, launcher] pair that exists (in the catalog or in a results file)."""
    from lab.matrix.cells import all_cells

    scenarios: list[str] = []
    launchers: list[str] = ["fork", "mp-default", "mp-fork", "pool-fork", "mp-spawn",
                            "mp-forkserver", "pool-spawn"]
    pairs = [(c.scenario, c.launcher) for c in all_cells()]
    pairs += [(r["scenario"], r["launcher"]) for p in platforms for r in p["rows"]]
    for scenario, launcher in pairs:
        if scenario not in scenarios:
            scenarios.append(scenario)
        if launcher not in launchers:
            launchers.append(launcher)
    used = {launcher for _, launcher in pairs}
    cells = list(dict.fromkeys(pairs))
    return scenarios, [name for name in launchers if name in used], [list(c) for c in cells]


def merge(docs: list[tuple[Path, dict]], recorded: Path | None = None) -> dict:
    """One document with every known platform (those without a file: "not run here"), the
    others found, and the recorded rows. Raises BadInput for two files of one platform."""
    by_id: dict[str, dict] = {}
    for path, doc in docs:
        pid = doc["platform"]["id"]
        if pid in by_id:
            raise BadInput(f"two results files for platform {pid}: {by_id[pid]['file']} and "
                           f"{path}")
        # an environment that could not be made, and no cell measured before it
        why_not = (None if any(matrix.measured(row) for row in doc["rows"])
                   else (doc.get("run") or {}).get("why_not"))
        by_id[pid] = {"id": pid, "state": NOT_RUN_HERE if why_not else "run", "why": why_not,
                      "platform": doc["platform"],
                      "run": doc.get("run"), "rows": list(doc["rows"]), "file": str(path),
                      "runs": doc.get("runs") or ([doc["run"]] if doc.get("run") else []),
                      "where": matrix.KNOWN_PLATFORMS.get(pid)}
    order = [*matrix.KNOWN_PLATFORMS, *sorted(set(by_id) - set(matrix.KNOWN_PLATFORMS))]
    platforms = [by_id.get(pid) or _not_run(pid) for pid in order]
    _add_predictions(platforms)
    row = recorded_row(recorded)
    if row is not None:
        _add_recorded(platforms, row, MACOS_TRAP.family)
    scenarios, launchers, cells = grid(platforms)
    return {"schema": MERGED_SCHEMA, "platforms": platforms, "scenarios": scenarios,
            "launchers": launchers, "cells": cells,
            "differences": differences(platforms, cells)}


def write_docs(merged: dict, docs_dir: Path) -> tuple[Path, Path]:
    """Write ``RESULTS.md`` and ``matrix.png`` into ``docs_dir``; return their paths."""
    from lab.evidence import write_atomic
    from lab.matrix.plot import write_png
    from lab.matrix.render_md import results_markdown

    docs_dir = Path(docs_dir)
    try:
        docs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot write the docs under {docs_dir}: {exc.strerror}") from None
    png = write_png(merged, docs_dir / "matrix.png")
    md = docs_dir / "RESULTS.md"
    write_atomic(md, results_markdown(merged, docs_dir))
    return md, png
