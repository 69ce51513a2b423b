"""The scenario catalog: name -> entry, imported lazily, each with its expected verdicts.

Every entry resolves to a ``Target`` for one of its launchers (``entry.target(launcher)``): the
fork hazards below run in ``lab.scenarios.host``; the Celery lab (``celery-chromadb``) runs a
real worker, its pools and fixes as its launchers. ``lab list``, ``lab run`` and ``lab matrix``
treat them all alike.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab import registry
from lab.errors import BadInput, LabError
from lab.target import REPO, Target


class MissingPackage(LabError):
    exit_status = 9


MP_DEFAULT = "mp-default"  # multiprocessing's default start method (lab.launchers.mp_default)


def with_mp_default(expected: dict[str, str]) -> dict[str, str]:
    """``expected`` plus ``mp-default``, which expects what the launcher of this interpreter's
    default start method expects (fork on Linux before 3.14, spawn on macOS), when the entry
    has that launcher; a target in another interpreter resolves it again (``expectation``)."""
    import multiprocessing

    # the first is the default (the multiprocessing docs), and asking fixes nothing
    row = expected.get(f"mp-{multiprocessing.get_all_start_methods()[0]}")
    return expected if row is None else {**expected, MP_DEFAULT: row}


class CatalogEntry:
    """What every catalog entry offers; subclasses set the attributes and ``target``."""

    name: str
    summary: str
    expected: dict[str, str]  # launcher -> expected verdict
    requires: tuple[str, ...] = ()
    default_timeout: float = 60.0
    fixed_of: str | None = None  # the broken scenario this one is the fixed twin of
    fix: str = ""  # one line: what the fix is
    any_interpreter = True  # False: runs only in the lab's own interpreter (no --python)
    # sys.platform -> launcher -> the verdict the mechanism predicts there, where it differs
    # from ``expected`` (measured on Linux): a prediction until that platform's results file
    # records it (docs/MACOS.md)
    predicted: dict[str, dict[str, str]] = {}
    needs_linux: str = ""  # why the entry runs only on Linux, whatever the backend

    @property
    def default_launcher(self) -> str:
        return "fork" if "fork" in self.expected else next(iter(self.expected))

    def missing(self, launcher: str | None = None) -> list[str]:
        """The packages missing here to run ``launcher`` (any launcher when None)."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def expectation(self, launcher: str, start_method: str | None = None) -> str:
        """The verdict expected under ``launcher``; ``mp-default`` expects what the launcher of
        the start method it turns out to be (``start_method``) expects, where the entry has one."""
        if launcher == MP_DEFAULT and start_method:
            return self.expected.get(f"mp-{start_method}", self.expected[launcher])
        return self.predicted.get(sys.platform, {}).get(launcher) or self.expected[launcher]

    def why_not_here(self, launcher: str | None = None) -> str | None:
        """Why ``launcher`` (any, when None) of this entry cannot run here, or None."""
        missing = self.missing(launcher)
        if missing:
            return f"missing: {', '.join(missing)}"
        if self.needs_linux and not sys.platform.startswith("linux"):
            return f"needs Linux: {self.needs_linux}"
        return None

    def fixes(self, launcher: str) -> tuple[str | None, str | None]:
        """(the broken entry it fixes, the fix in one line) for one launcher of this entry."""
        return self.fixed_of, self.fix or None

    def choose_launcher(self, launcher: str | None, pool: str | None = None,
                        fix: str | None = None) -> str:
        """The launcher a command line asks for: ``--launcher``, or ``--pool``/``--fix``."""
        if pool is None and fix in (None, "none"):
            return launcher or self.default_launcher
        if launcher is not None:
            raise BadInput("give --launcher, or --pool and --fix, not both")
        return self.launcher_for(pool, fix or "none")

    def launcher_for(self, pool: str | None, fix: str) -> str:
        raise BadInput(f"--pool and --fix apply to an entry with worker pools, not {self.name!r}",
                       "`python -m lab list` shows each entry's launchers")

    def check_launcher(self, launcher: str) -> None:
        if launcher not in self.expected:
            raise BadInput(f"scenario {self.name!r} does not run under launcher {launcher!r}; "
                           f"it runs under: {', '.join(self.expected)}")

    def missing_error(self, missing: list[str], launcher: str | None = None) -> MissingPackage:
        what = f"scenario {self.name!r}" + (f" with launcher {launcher!r}" if launcher else "")
        quoted = " ".join(f"'{m}'" if any(c in m for c in "<>=") else m for m in missing)
        return MissingPackage(f"{what} needs {', '.join(missing)}, not installed here",
                              f"pip install {quoted}")

    def row(self) -> dict[str, Any]:
        """This entry as `lab list --json` shows it."""
        why_not = self.why_not_here()
        return {"name": self.name, "summary": self.summary, "expected": dict(self.expected),
                "launchers": list(self.expected), "requires": list(self.requires),
                "runnable": why_not is None, "why_not": why_not,
                "predicted": self.predicted.get(sys.platform) or None,
                "fixed_of": self.fixed_of, "fix": self.fix or None}

    def target(self, launcher: str, python: str | None = None) -> Target:
        raise NotImplementedError


@dataclass
class Scenario(CatalogEntry):
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
    predicted: dict[str, dict[str, str]] = field(default_factory=dict)
    needs_linux: str = ""

    def target(self, launcher: str, python: str | None = None) -> Target:
        """Run in ``lab.scenarios.host`` under ``launcher`` (in interpreter ``python`` when
        given: e.g. a CPython 3.12 to see its fork DeprecationWarning). Raises BadInput,
        MissingPackage."""
        from lab import interpreters, launchers

        launchers.get(launcher)
        self.check_launcher(launcher)
        interpreter, version, start_method = sys.executable, None, None
        if python is not None:
            found = interpreters.describe(python, self.requires)
            interpreter, version, missing = found.path, found.version, found.missing
            start_method = found.start_method
        else:
            missing = self.missing()
        if missing:
            raise self.missing_error(missing)
        return Target(argv=[interpreter, "-m", "lab.scenarios.host", self.name, "--launcher",
                            launcher],
                      label=f"{self.name}-{launcher}", env=dict(self.env), cwd=str(REPO),
                      timeout=self.default_timeout, scenario=self.name, launcher=launcher,
                      expected=self.expectation(launcher, start_method), side_channel=True,
                      scratch_env="LAB_SCRATCH_DIR", python_version=version)


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
    # a real Celery worker: its pools and fixes are the launchers
    "celery-chromadb": "lab.celery_lab.catalog:CELERY",
}


def names() -> list[str]:
    return list(SCENARIOS)


def get(name: str) -> CatalogEntry:
    """Return the entry called ``name``; raises BadInput for an unknown one."""
    return registry.load(SCENARIOS, name, "scenario",
                         "`python -m lab list` shows them with their launchers", "SCENARIO")


def modules() -> list[str]:
    """Every module a catalog entry needs (what an interpreter's environment may have to get)."""
    return sorted({m for name in names() for m in get(name).requires})
