"""The scenario catalog: name -> module, imported lazily, each with its expected verdicts."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

from lab.errors import BadInput, LabError


@dataclass
class Scenario:
    """A fork hazard: what the parent sets up, what the child does, what must happen."""

    name: str
    summary: str
    expected: dict[str, str]  # launcher -> expected verdict
    prepare: Callable[[], Any]  # runs in the parent, before the launch; returns the state
    child: Callable[[Any], None]  # runs in the child with that state
    requires: tuple[str, ...] = ()  # importable modules the scenario needs
    expected_threads: tuple[str, ...] = ()  # thread-name prefixes expected in the parent
    default_timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


SCENARIOS = {
    "chromadb-tokio": "lab.scenarios.chromadb_tokio",
}


def names() -> list[str]:
    return list(SCENARIOS)


def get(name: str) -> Scenario:
    """Return the scenario called ``name``; raises BadInput for an unknown one."""
    if name not in SCENARIOS:
        raise BadInput(f"unknown scenario {name!r}; `python -m lab list` shows them: "
                       f"{', '.join(SCENARIOS)}")
    return importlib.import_module(SCENARIOS[name]).SCENARIO


class MissingPackage(LabError):
    exit_status = 9
