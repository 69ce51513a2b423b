"""The results matrix: every scenario × launcher, N trials each, per platform, merged into docs."""

from __future__ import annotations

SCHEMA = "lab-matrix/1"

# The platforms the workflow (.github/workflows/matrix.yml) runs on, and the interpreters
# `lab matrix --python` runs here, in the order the docs show them. One that has no results
# file is shown as "not run here", never guessed.
# Interpreters besides the workflow's 3.11 (`lab matrix --python X.Y`): id -> version.
OTHER_INTERPRETERS = {f"linux-x86_64-py{v}": v for v in ("3.10", "3.12", "3.13")}
KNOWN_PLATFORMS = {
    "linux-x86_64-py3.10": "any Linux x86_64 machine with CPython 3.10",
    "linux-x86_64-py3.11": "ubuntu-latest (GitHub Actions) or any Linux x86_64 machine",
    "linux-x86_64-py3.12": "any Linux x86_64 machine with CPython 3.12",
    "linux-x86_64-py3.13": "any Linux x86_64 machine with CPython 3.13",
    "linux-aarch64-py3.11": "ubuntu-24.04-arm (GitHub Actions) or any Linux arm64 machine",
    "darwin-arm64-py3.11": "macos-14 (GitHub Actions) or any Apple silicon Mac",
}

# Row statuses in a results file.
RUN = "run"  # N trials ran; counts and rate are real
NOT_RUN = "not-run"  # did not run here; ``why`` says why
ERROR = "error"  # a lab error stopped the cell; ``why`` is its one line
INTERRUPTED = "interrupted"  # SIGINT/SIGTERM during the cell; counts hold the trials done
PENDING = "pending"  # not reached yet (a file read while the matrix still runs)
RECORDED = "recorded"  # from a transcript captured elsewhere (``source``), not run here
ILLUSTRATIVE = "illustrative"  # a hand-built transcript: shows a shape, observes nothing
PREDICTED = "predicted"  # what the catalog predicts for a platform without results
MEASURED = (RUN, ERROR, INTERRUPTED)  # the statuses of a row that holds trials


def measured(row: dict) -> bool:
    """True for a row that holds trials (worth keeping over a "not run" one)."""
    return row.get("status") in MEASURED and bool(row.get("trials"))
