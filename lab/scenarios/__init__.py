"""The scenario catalog: name -> module, imported lazily, each with its expected verdicts."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    # What the child receives: handoff(state, pickles) -> payload. Launchers that pickle the
    # target's arguments (spawn, forkserver, pools) need a picklable payload; None: the state.
    handoff: Callable[[Any, bool], Any] | None = None
    # After the child ended, in the parent: check(state, exit_code) -> a finding or None,
    # e.g. ("data-loss", "the child's committed row is not in the database").
    check: Callable[[Any, int], tuple[str, str] | None] | None = None
    fixed_of: str | None = None  # the broken scenario this one is the fixed twin of
    fix: str = ""  # one line: what the fix is

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


# name -> "module" (its SCENARIO) or "module:ATTRIBUTE"; imported only when asked for.
SCENARIOS = {
    "chromadb-tokio": "lab.scenarios.chromadb_tokio",
    "chromadb-ephemeral": "lab.scenarios.chromadb_variants:EPHEMERAL",
    "chromadb-exit-hang": "lab.scenarios.chromadb_variants:EXIT_HANG",
    "chromadb-new-client-in-child": "lab.scenarios.chromadb_variants:NEW_CLIENT",
    "chromadb-lazy-init": "lab.scenarios.chromadb_variants:LAZY",
    "python-lock-held": "lab.scenarios.locks:PYTHON_LOCK",
    "python-lock-reinit": "lab.scenarios.locks:PYTHON_LOCK_REINIT",
    "native-mutex-held": "lab.scenarios.locks:NATIVE_MUTEX",
    "logging-lock": "lab.scenarios.locks:LOGGING_LOCK",
    "buffered-writer-lock": "lab.scenarios.locks:BUFFERED_WRITER",
    "buffered-writer-fresh": "lab.scenarios.locks:BUFFERED_WRITER_FRESH",
    "sqlite-wal-txn": "lab.scenarios.sqlite_wal:SQLITE_WAL_TXN",
    "sqlite-own-connection": "lab.scenarios.sqlite_wal:SQLITE_FRESH",
    "pickle-bindings": "lab.scenarios.pickling:PICKLE_BINDINGS",
    "pickle-by-path": "lab.scenarios.pickling:PICKLE_BY_PATH",
    "pool-silent-zero": "lab.scenarios.pickling:POOL_SILENT_ZERO",
    "pool-plain-results": "lab.scenarios.pickling:POOL_PLAIN",
    "breakpoint-trap": "lab.scenarios.breakpoint_trap",
    # optional packages (pyproject extras `torch`, `optional`): skipped with a reason if absent
    "openmp-threads": "lab.scenarios.torch_openmp:OPENMP_THREADS",
    "openmp-threads-spin": "lab.scenarios.torch_openmp:OPENMP_SPIN",
    "openmp-single-thread": "lab.scenarios.torch_openmp:OPENMP_SINGLE",
    "tokenizers": "lab.scenarios.rust_pools:TOKENIZERS",
    "tokenizers-parallelism-unset": "lab.scenarios.rust_pools:TOKENIZERS_UNSET",
    "polars": "lab.scenarios.rust_pools:POLARS",
    "kuzu": "lab.scenarios.kuzu_db:KUZU",
    "kuzu-close-before-launch": "lab.scenarios.kuzu_db:KUZU_CLOSED",
    "onnxruntime": "lab.scenarios.onnxruntime_pool:ONNXRUNTIME",
}


def names() -> list[str]:
    return list(SCENARIOS)


def get(name: str) -> Scenario:
    """Return the scenario called ``name``; raises BadInput for an unknown one."""
    if name not in SCENARIOS:
        raise BadInput(f"unknown scenario {name!r}; `python -m lab list` shows them: "
                       f"{', '.join(SCENARIOS)}")
    module, _, attribute = SCENARIOS[name].partition(":")
    return getattr(importlib.import_module(module), attribute or "SCENARIO")


class MissingPackage(LabError):
    exit_status = 9
