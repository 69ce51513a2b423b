"""The Makefile's targets, run for real: natively on Linux, and its Docker path with a stub client
(tests/test_docker_engine.py runs it on a real engine).

Evidence goes to a temporary directory (``CRASH_DUMPS=...``), never into the repository's
crash_dumps/. Targets whose command has not landed yet skip on a real probe of that command and
turn on by themselves when it lands.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LONG_TIMEOUT, REPO, SHORT_TIMEOUT

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the targets run natively on Linux only"),
    pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed"),
]

# Every target the issue asks for, in `make help`'s order.
TARGETS = ("help", "demo-gdb", "demo-lldb", "demo-crash", "demo-strace", "demo-fixed", "celery",
           "matrix", "report", "bench", "test", "lint", "build", "shell", "down", "clean")
# The matrix runs every scenario under every launcher: minutes, not seconds.
MATRIX_TIMEOUT = 600.0
# Variables of an outer make (`make test` runs this suite) or of the caller that would change
# what the inner make does.
OUTER_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS", "DOCKER",
                   "CRASH_DUMPS", "LAB_CRASH_DUMPS", "RUN", "QUICK", "COMPOSE", "TRIALS", "ONLY",
                   "MATRIX_RESULTS", "MATRIX_DOCS", "PYTHONS", "SOAK_RUNS", "LAB_OWNER",
                   "LAB_BUILD_NETWORK", "LAB_HOST_CRASH_DUMPS", "COMPOSE_PROJECT_NAME")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    """The lab CLI's subcommands, {name: parser} (a probe of what has landed)."""
    from lab.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _has_option(subcommand: str, option: str) -> bool:
    sub = _subcommands().get(subcommand)
    return sub is not None and option in sub._option_string_actions


def _expected_launchers(scenario: str) -> dict[str, str]:
    from lab import scenarios

    try:
        return dict(scenarios.get(scenario).expected)
    except Exception:  # an unknown scenario: the probe says "not there"
        return {}


def _module_runnable(name: str) -> bool:
    try:
        return importlib.util.find_spec(f"{name}.__main__") is not None
    except ImportError:
        return False


def _tool(name: str) -> bool:
    """True when the target can have ``name``: installed, or make may apt-get it (root)."""
    return shutil.which(name) is not None or (os.geteuid() == 0 and shutil.which("apt-get"))


FIXED = _expected_launchers("chromadb-tokio")
needs_strace_flag = pytest.mark.skipif(
    not _has_option("run", "--strace") or not _tool("strace"),
    reason="`lab run --strace` has not landed, or strace is unavailable")
needs_fixed_launchers = pytest.mark.skipif(
    FIXED.get("mp-spawn") != "ok" or FIXED.get("mp-forkserver") != "ok",
    reason="chromadb-tokio has no mp-spawn/mp-forkserver launchers expected ok yet")
needs_lldb_script = pytest.mark.skipif(
    not (REPO / "scripts" / "lldb_attach_child.py").is_file() or not _tool("lldb"),
    reason="scripts/lldb_attach_child.py has not landed, or lldb is unavailable")
needs_celery_lab = pytest.mark.skipif(
    not _module_runnable("lab.celery_lab") or importlib.util.find_spec("celery") is None,
    reason="`python -m lab.celery_lab` has not landed, or celery is not installed")
needs_matrix = pytest.mark.skipif("matrix" not in _subcommands(),
                                  reason="`lab matrix` has not landed")
needs_report = pytest.mark.skipif("report" not in _subcommands(),
                                  reason="`lab report` has not landed")
needs_bench = pytest.mark.skipif(not _has_option("bench", "--quick"),
                                 reason="`lab bench --quick` has not landed")


def make(reaper, *args: str, timeout: float = LONG_TIMEOUT, path_prefix: Path | None = None,
         cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``make ARGS`` in ``cwd`` with a clean environment (no outer make, no overrides), plus
    ``env``."""
    environ = {k: v for k, v in os.environ.items() if k not in OUTER_VARIABLES}
    environ.update(env or {})
    if path_prefix is not None:
        environ["PATH"] = f"{path_prefix}{os.pathsep}{environ.get('PATH', '')}"
    return reaper.run(["make", "--no-print-directory", *args], timeout=timeout, cwd=cwd,
                      env=environ)


def runs(base: Path) -> list[dict]:
    """The evidence documents under ``base``, oldest first."""
    return [json.loads((d / "evidence.json").read_text())
            for d in sorted(base.iterdir()) if (d / "evidence.json").is_file()]


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n" \
           f"--- stderr\n{result.stderr[-3000:]}"


# ---------------------------------------------------------------------------- help


def test_help_is_the_default_and_lists_every_target_on_one_line(reaper):
    # GIVEN the Makefile WHEN make runs with no target and with `help`
    default, named = make(reaper), make(reaper, "help")
    # THEN both print the same listing, one `  make TARGET  description` line per target
    assert default.returncode == 0 and named.returncode == 0, explain(default)
    assert default.stdout == named.stdout
    lines = default.stdout.splitlines()
    listed = {}
    for line in lines:
        match = re.fullmatch(r"  make (\S+)\s+(\S.*)", line)
        assert match, f"not a help line: {line!r}"
        listed[match.group(1)] = match.group(2)
    assert set(TARGETS) <= set(listed), set(TARGETS) - set(listed)
    assert len(listed) == len(lines)  # no target twice


# ---------------------------------------------------------------------------- demos, natively


@pytest.mark.slow
def test_demo_crash_reproduces_the_deadlock_and_gives_the_verdict_only(reaper, tmp_path):
    # WHEN the verdict-only demo runs natively
    result = make(reaper, "demo-crash", f"CRASH_DUMPS={tmp_path}")
    # THEN it exits 0 (the expected deadlock was observed) with evidence and no debugger
    assert result.returncode == 0, explain(result)
    assert "-m lab run chromadb-tokio --launcher fork --debugger none" in result.stdout
    [evidence] = runs(tmp_path)
    assert evidence["verdict"] == evidence["expected"] == "deadlock"
    assert not list(tmp_path.glob("*/gdb.txt"))


@pytest.mark.slow
@pytest.mark.skipif(not _tool("gdb"), reason="gdb is not installed and make cannot apt-get it")
def test_demo_gdb_captures_the_blocked_child_with_gdb(reaper, tmp_path):
    # WHEN the README's main command runs natively
    result = make(reaper, "demo-gdb", f"CRASH_DUMPS={tmp_path}")
    # THEN the deadlock is proven and GDB's transcript is part of the evidence
    assert result.returncode == 0, explain(result)
    [evidence] = runs(tmp_path)
    assert evidence["verdict"] == "deadlock"
    assert (evidence.get("debugger") or {}).get("name") == "gdb"
    assert list(tmp_path.glob("*/gdb.txt"))


@pytest.mark.slow
@needs_strace_flag
def test_demo_strace_saves_the_syscalls_as_evidence(reaper, tmp_path):
    # WHEN the strace demo runs natively
    result = make(reaper, "demo-strace", f"CRASH_DUMPS={tmp_path}")
    # THEN the deadlock is reproduced and strace's output is kept with the evidence
    assert result.returncode == 0, explain(result)
    [evidence] = runs(tmp_path)
    assert evidence["verdict"] == "deadlock"
    [trace] = tmp_path.glob("*/strace.txt")
    assert "futex" in trace.read_text(errors="replace")


@pytest.mark.slow
@needs_fixed_launchers
def test_demo_fixed_spawn_and_forkserver_twins_succeed(reaper, tmp_path):
    # WHEN the fixed twins run natively
    result = make(reaper, "demo-fixed", f"CRASH_DUMPS={tmp_path}")
    # THEN both end ok, as expected, under their own launchers
    assert result.returncode == 0, explain(result)
    documents = runs(tmp_path)
    assert sorted(d["launcher"] for d in documents) == ["mp-forkserver", "mp-spawn"]
    assert all(d["verdict"] == "ok" for d in documents)


@pytest.mark.slow
@needs_lldb_script
def test_demo_lldb_runs_the_lldb_script(reaper, tmp_path):
    result = make(reaper, "demo-lldb", f"CRASH_DUMPS={tmp_path}")
    assert result.returncode == 0, explain(result)
    assert "scripts/lldb_attach_child.py" in result.stdout


@pytest.mark.slow
@needs_celery_lab
def test_celery_target_runs_the_celery_lab(reaper, tmp_path):
    result = make(reaper, "celery", f"CRASH_DUMPS={tmp_path}")
    assert result.returncode == 0, explain(result)
    assert "-m lab.celery_lab" in result.stdout


@pytest.mark.slow
@needs_matrix
def test_matrix_target_runs_the_matrix(reaper, tmp_path):
    # One cell, one trial, into the test's own directories: the committed results stay as
    # they are (the full matrix takes about 20 minutes and is not part of `make test`).
    result = make(reaper, "matrix", f"CRASH_DUMPS={tmp_path}", "TRIALS=1",
                  "ONLY=python-lock-held/fork", f"MATRIX_RESULTS={tmp_path}/results",
                  f"MATRIX_DOCS={tmp_path}/docs", timeout=MATRIX_TIMEOUT)
    assert result.returncode == 0, explain(result)
    assert "-m lab matrix" in result.stdout
    [results] = (tmp_path / "results").glob("*.json")
    rows = json.loads(results.read_text())["rows"]
    ran = [row for row in rows if row.get("counts")]
    assert [(r["scenario"], r["launcher"]) for r in ran] == [("python-lock-held", "fork")]
    assert (tmp_path / "docs" / "RESULTS.md").is_file()


@pytest.mark.slow
@needs_report
def test_report_defaults_to_the_newest_run(reaper, tmp_path):
    # GIVEN one run in a fresh evidence directory
    first = make(reaper, "demo-crash", f"CRASH_DUMPS={tmp_path}")
    assert first.returncode == 0, explain(first)
    [run_dir] = [d for d in tmp_path.iterdir() if d.is_dir()]
    # WHEN `make report` is given no RUN THEN it reports that run
    result = make(reaper, "report", f"CRASH_DUMPS={tmp_path}")
    assert result.returncode == 0, explain(result)
    assert f"-m lab report {run_dir}" in result.stdout


@pytest.mark.slow
@needs_bench
def test_bench_quick(reaper, tmp_path):
    result = make(reaper, "bench", "QUICK=1", f"CRASH_DUMPS={tmp_path}")
    assert result.returncode == 0, explain(result)
    assert "-m lab bench --quick" in result.stdout


# ---------------------------------------------------------------------------- clean


def test_clean_removes_the_evidence_and_keeps_gitkeep(reaper, tmp_path):
    # GIVEN an evidence directory with runs, a stray file and the .gitkeep
    (tmp_path / ".gitkeep").touch()
    run = tmp_path / "20260101-000000-x-1-abcdef"
    run.mkdir()
    (run / "evidence.json").write_text("{}")
    (tmp_path / "stray.txt").write_text("x")
    # WHEN make clean runs on it
    result = make(reaper, "clean", f"CRASH_DUMPS={tmp_path}", timeout=SHORT_TIMEOUT)
    # THEN only .gitkeep is left
    assert result.returncode == 0, explain(result)
    assert [p.name for p in tmp_path.iterdir()] == [".gitkeep"]


# ---------------------------------------------------------------------------- lint


def test_lint_passes_on_the_repository(reaper):
    # WHEN make lint runs on the repository as it is
    result = make(reaper, "lint", timeout=LONG_TIMEOUT)
    # THEN ruff, hadolint, the compose schema and the compose policy all pass
    assert result.returncode == 0, explain(result)
    for tool in ("ruff check", "hadolint", "check-jsonschema", "docker/check_compose.py"):
        assert tool in result.stdout


@pytest.fixture
def lint_copy(tmp_path) -> Path:
    """A copy of what `make lint` checks, with clean Python code, using this interpreter's venv."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("Makefile", "pyproject.toml", "Dockerfile", "compose.yml", ".hadolint.yaml"):
        shutil.copy2(REPO / name, copy / name)
    shutil.copytree(REPO / "docker", copy / "docker",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "clean.py").write_text('"""Clean."""\n\nimport os\n\nprint(os.sep)\n')
    stamp = Path(sys.prefix) / ".installed"  # .venv/ natively, /opt/venv in the image
    if not stamp.is_file():
        pytest.skip("these tests do not run in the Makefile's venv (run `make venv`)")
    # Older than the venv's stamp: make must not reinstall the venv from this copy.
    old = stamp.stat().st_mtime - 60
    os.utime(copy / "pyproject.toml", (old, old))
    return copy


def test_lint_passes_on_clean_code_and_fails_on_each_kind_of_problem(reaper, lint_copy):
    venv = f"VENV={sys.prefix}"
    # GIVEN clean code WHEN make lint runs THEN it passes
    clean = make(reaper, "lint", venv, cwd=lint_copy, timeout=SHORT_TIMEOUT)
    assert clean.returncode == 0, explain(clean)
    # GIVEN an unused import, a Dockerfile on :latest, and a privileged service
    (lint_copy / "bad.py").write_text("import os\n")
    (lint_copy / "Dockerfile").write_text("FROM debian:latest\nRUN apt-get update\n")
    compose = (lint_copy / "compose.yml").read_text()
    (lint_copy / "compose.yml").write_text(
        compose.replace("  demo-crash:\n", "  demo-crash:\n    privileged: true\n", 1))
    # WHEN make lint runs THEN every check runs, and each problem is reported
    bad = make(reaper, "lint", venv, cwd=lint_copy, timeout=SHORT_TIMEOUT)
    assert bad.returncode != 0
    output = bad.stdout + bad.stderr
    assert "F401" in output and "DL3007" in output and "privileged is forbidden" in output
    assert "lab: lint failed: ruff hadolint compose-policy" in bad.stderr, bad.stderr


# ---------------------------------------------------------------------------- Docker mode


def _stub_docker(directory: Path, engine: bool, plugin: bool = True, bridge: bool = True) -> Path:
    """A `docker` on PATH that logs its arguments (calls.log) and, for Compose (but `compose
    version`), the variables compose.yml reads (env.log). `info` fails unless ``engine``;
    `compose` unless ``plugin``; `network inspect` (the default bridge) unless ``bridge``."""
    directory.mkdir()
    log = directory / "calls.log"
    script = directory / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> '{log}'\n"
        f"if [ \"$1\" = info ]; then exit {0 if engine else 1}; fi\n"
        f"if [ \"$1\" = network ]; then exit {0 if bridge else 1}; fi\n"
        f"if [ \"$1\" = compose ]; then {'' if plugin else 'exit 1; '}"
        "[ \"$2\" = version ] || echo \"$LAB_OWNER $LAB_HOST_CRASH_DUMPS $LAB_BUILD_NETWORK "
        f"$COMPOSE_PROJECT_NAME\" >> '{directory / 'env.log'}'; fi\n"
        "exit 0\n")
    script.chmod(0o755)
    return log


def _stub_standalone_compose(directory: Path) -> Path:
    """A `docker-compose` on PATH (in ``directory``) that logs its arguments to compose.log."""
    log = directory / "compose.log"
    script = directory / "docker-compose"
    script.write_text(f"#!/bin/sh\necho \"$*\" >> '{log}'\nexit 0\n")
    script.chmod(0o755)
    return log


def _no_engine(tmp_path: Path) -> dict[str, str]:
    """The environment of a Docker client whose engine is not there (no socket behind it)."""
    return {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}


@pytest.mark.parametrize("target", ["demo-gdb", "demo-crash", "test", "lint"])
def test_docker_mode_without_an_engine_says_so_and_fails(reaper, tmp_path, target):
    # WHEN DOCKER=1 make TARGET runs where the client reaches no Docker engine
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    result = make(reaper, target, "DOCKER=1", f"CRASH_DUMPS={evidence}", timeout=SHORT_TIMEOUT,
                  env=_no_engine(tmp_path))
    # THEN it fails at once with one clear line, and runs nothing natively
    assert result.returncode != 0
    assert "lab: no Docker engine:" in result.stderr
    assert "run natively on Linux" in result.stderr
    assert "-m lab" not in result.stdout and not list(evidence.iterdir())


@pytest.mark.parametrize("target", ["build", "shell", "down"])
def test_docker_only_targets_without_an_engine_say_so_and_fail(reaper, tmp_path, target):
    result = make(reaper, target, timeout=SHORT_TIMEOUT, env=_no_engine(tmp_path))
    assert result.returncode != 0
    assert "lab: no Docker engine:" in result.stderr


def test_a_host_that_is_not_linux_uses_docker_and_says_when_it_cannot(reaper, tmp_path):
    # GIVEN a host that is not Linux and a Docker client whose engine is not running
    stub = tmp_path / "bin"
    _stub_docker(stub, engine=False)
    # WHEN a demo runs with the default mode THEN Docker is chosen, and its absence explained
    result = make(reaper, "demo-crash", "HOST_OS=Darwin", path_prefix=stub, timeout=SHORT_TIMEOUT)
    assert result.returncode != 0
    assert "no Docker engine" in result.stderr and "natively only on Linux" in result.stderr
    # WHEN native mode is forced there THEN the lab says it needs Linux
    forced = make(reaper, "demo-crash", "HOST_OS=Darwin", "DOCKER=0", timeout=SHORT_TIMEOUT)
    assert forced.returncode != 0
    assert "runs natively only on Linux" in forced.stderr


# What each target runs in Docker mode: its own service, or `make TARGET` in the shell service.
DOCKER_CALLS = {
    "demo-gdb": "compose run --rm demo-gdb",
    "demo-lldb": "compose run --rm demo-lldb",
    "demo-crash": "compose run --rm demo-crash",
    "demo-strace": "compose run --rm demo-strace",
    "demo-fixed": "compose run --rm demo-fixed",
    "matrix": "compose run --rm matrix",
    "test": "compose run --rm test",
    "celery": "compose run --rm shell make celery",
    "lint": "compose run --rm shell make lint",
    "bench": "compose run --rm shell make bench QUICK=1",
    "build": "compose --profile celery build demo-gdb redis",
    "shell": "compose run --rm shell",
    "down": "compose --profile celery down --remove-orphans",
}


@pytest.mark.parametrize("target", DOCKER_CALLS)
def test_docker_mode_runs_the_compose_service(reaper, tmp_path, target):
    # GIVEN a stub Docker client whose engine answers
    log = _stub_docker(tmp_path / "bin", engine=True)
    # WHEN the target runs in Docker mode
    result = make(reaper, target, "DOCKER=1", "QUICK=1", path_prefix=tmp_path / "bin",
                  timeout=SHORT_TIMEOUT)
    # THEN the engine was checked and the service of compose.yml was run, nothing natively
    assert result.returncode == 0, explain(result)
    calls = log.read_text().splitlines()
    assert calls[:2] == ["info", "compose version"] and calls[-1] == DOCKER_CALLS[target]
    assert "bin/python" not in result.stdout


def test_docker_mode_uses_docker_compose_where_the_plugin_is_missing(reaper, tmp_path):
    # GIVEN an engine, a client without the Compose v2 plugin, and a standalone docker-compose
    calls = _stub_docker(tmp_path / "bin", engine=True, plugin=False)
    standalone = _stub_standalone_compose(tmp_path / "bin")
    # WHEN a demo runs in Docker mode
    result = make(reaper, "demo-crash", "DOCKER=1", path_prefix=tmp_path / "bin",
                  timeout=SHORT_TIMEOUT)
    # THEN docker-compose runs the service, after the plugin was tried
    assert result.returncode == 0, explain(result)
    assert "compose version" in calls.read_text().splitlines()
    assert standalone.read_text().splitlines() == ["version", "run --rm demo-crash"]


def test_docker_mode_without_compose_says_so_and_fails(reaper, tmp_path):
    # GIVEN an engine but no Compose (COMPOSE empty: what the lookup gives when neither exists)
    _stub_docker(tmp_path / "bin", engine=True, plugin=False)
    result = make(reaper, "demo-crash", "DOCKER=1", "COMPOSE=", path_prefix=tmp_path / "bin",
                  timeout=SHORT_TIMEOUT)
    # THEN one line says what to install
    assert result.returncode != 0
    assert "lab: no Docker Compose: neither 'docker compose' nor docker-compose is installed" \
        in result.stderr


@pytest.mark.parametrize("bridge, network", [(True, "default"), (False, "host")],
                         ids=["engine with a bridge", "engine without a bridge"])
def test_docker_mode_tells_compose_who_owns_the_evidence_where_it_goes_and_how_to_build(
        reaper, tmp_path, bridge, network):
    # GIVEN an engine with or without a default bridge, and an evidence directory not made yet
    log = _stub_docker(tmp_path / "bin", engine=True, bridge=bridge)
    evidence = tmp_path / "evidence"
    # WHEN a demo runs in Docker mode
    result = make(reaper, "demo-crash", "DOCKER=1", f"CRASH_DUMPS={evidence}",
                  path_prefix=tmp_path / "bin", timeout=SHORT_TIMEOUT)
    # THEN Compose is told the caller (who gets the files), the directory, made by the caller
    # (not by Docker, as root), and the build network: the host's only where there is no bridge
    assert result.returncode == 0, explain(result)
    [env] = (log.parent / "env.log").read_text().splitlines()
    assert env.split() == [f"{os.getuid()}:{os.getgid()}", str(evidence), network,
                           "fork-crash-lab"]
    assert evidence.is_dir() and evidence.stat().st_uid == os.getuid()


def test_docker_mode_mounts_a_relative_evidence_directory_from_the_repository(reaper, tmp_path):
    log = _stub_docker(tmp_path / "bin", engine=True)
    result = make(reaper, "demo-crash", "DOCKER=1", path_prefix=tmp_path / "bin",
                  timeout=SHORT_TIMEOUT)
    assert result.returncode == 0, explain(result)
    # ./crash_dumps: Compose reads a bare `crash_dumps` as the name of a volume, not a path
    assert (log.parent / "env.log").read_text().split()[1] == "./crash_dumps"
