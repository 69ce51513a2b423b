"""What every measurement family gets: quick or full, a scratch directory, progress on stderr."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.progress import Progress


class BenchFailed(LabError):
    """A measurement could not be taken: a program failed, answered late or unreadably."""

    exit_status = 8


@dataclass
class BenchContext:
    quick: bool
    scratch: Path  # removed when the bench ends: ChromaDB directories, evidence, cores, logs
    progress: Progress

    @property
    def runs_dir(self) -> Path:
        """Where the lab's own runs write their evidence during the bench."""
        path = self.scratch / "runs"
        path.mkdir(exist_ok=True)
        return path

    def env(self) -> dict[str, str]:
        """The environment of bench programs: scenario data goes under the scratch directory."""
        return {**os.environ, "LAB_SCRATCH_DIR": str(self.scratch)}

    def log(self, label: str) -> Path:
        return self.scratch / f"{label}-{secrets.token_hex(3)}.log"

    def say(self, message: str) -> None:
        self.progress.stage("bench", message)

    def pick(self, full, quick):
        return quick if self.quick else full
