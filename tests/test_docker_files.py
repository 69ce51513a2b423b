"""The Docker files, checked without a Docker engine: hadolint, the compose-spec schema, the
least-privilege policy, and that each service runs the native target's own command line.

No image is built and no container runs here (there is no engine): see the README.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHORT_TIMEOUT

yaml = pytest.importorskip("yaml")

BIN = Path(sys.executable).parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yml"


def _lint_tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: pip install -e '.[lint]' (make venv does)")
    return path


def _check_compose():
    """Import docker/check_compose.py (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("check_compose",
                                                  REPO / "docker" / "check_compose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


# ---------------------------------------------------------------------------- Dockerfile


def test_dockerfile_passes_hadolint(reaper):
    result = reaper.run([_lint_tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"),
                         str(DOCKERFILE)], timeout=SHORT_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_is_not_a_blanket(reaper, tmp_path):
    # GIVEN a Dockerfile with the usual mistakes WHEN hadolint checks it with the lab's config
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN cd /tmp && apt-get update\n")
    result = reaper.run([_lint_tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"),
                         str(bad)], timeout=SHORT_TIMEOUT)
    # THEN it fails on them: only the one rule the config names is off
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3003" in result.stdout


def test_dockerfile_gives_debuggers_and_py_bt_to_the_lab():
    text = DOCKERFILE.read_text()
    [base] = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    # THEN the base is pinned by a tag, never :latest or untagged
    assert ":" in base and not base.endswith(":latest")
    # and the debuggers, ps and the interpreter with its gdb extension are installed
    for package in ("gdb", "lldb", "strace", "procps", "python3.11", "python3.11-dbg"):
        assert f"      {package} \\" in text or f"      {package}\n" in text, package
    # and the lab itself, from the build context, as the Makefile installs it
    assert "pip install --no-cache-dir -e '.[test,lint,celery]'" in text
    assert "find_python_gdb_extension" in text  # the build fails if py-bt would not work
    assert "--privileged" not in text


def test_the_extension_the_image_ships_is_where_the_lab_looks():
    # GIVEN Debian's python3.11-dbg file, which the image relies on for py-bt
    from lab.debuggers.pyext import extension_candidates

    shipped = Path("/usr/share/gdb/auto-load/usr/bin/python3.11-gdb.py")
    # WHEN the lab lists where the extension of /usr/bin/python3.11 may be THEN it is there
    assert shipped in extension_candidates("/usr/bin/python3.11", None)


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text()
                .splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", "crash_dumps", "results", ".git"} <= patterns


# ---------------------------------------------------------------------------- compose.yml


def test_compose_validates_against_the_compose_spec_offline(reaper):
    result = reaper.run([_lint_tool("check-jsonschema"), "--builtin-schema",
                         "vendor.compose-spec", str(COMPOSE)], timeout=SHORT_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_follows_the_least_privilege_policy(compose):
    assert _check_compose().problems(compose) == []
    code = [line.split("#")[0] for line in COMPOSE.read_text().splitlines()]
    assert not any("privileged" in line for line in code)


def test_every_service_is_there_and_debuggers_get_only_sys_ptrace(compose):
    services = compose["services"]
    for name in ("demo-gdb", "demo-lldb", "demo-crash", "demo-strace", "demo-fixed", "matrix",
                 "test", "shell", "redis"):
        assert name in services
    for name in ("demo-gdb", "demo-lldb", "demo-strace", "test", "shell"):
        assert services[name]["cap_add"] == ["SYS_PTRACE"], name
    for name in ("demo-crash", "demo-fixed", "redis"):
        assert "cap_add" not in services[name], name
    assert services["redis"]["profiles"] == ["celery"]  # optional: not started by default


def test_evidence_directories_are_bind_mounted(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            assert "./crash_dumps:/lab/crash_dumps" in service["volumes"], name
            assert "./results:/lab/results" in service["volumes"], name


@pytest.mark.parametrize("doc_change, complaint", [
    ({"privileged": True}, "privileged is forbidden"),
    ({"security_opt": ["seccomp:unconfined"]}, "unconfined"),
    ({"cap_add": ["SYS_PTRACE", "SYS_ADMIN"]}, "beyond SYS_PTRACE"),
    ({"pid": "host"}, "pid: host"),
    ({"cap_add": []}, "needs cap_add: [SYS_PTRACE]"),
    ({"volumes": ["./results:/lab/results"]}, "bind-mount ./crash_dumps"),
], ids=["privileged", "unconfined", "extra-cap", "host-pid", "no-ptrace", "no-evidence-mount"])
def test_the_policy_check_catches_each_violation(compose, doc_change, complaint):
    # GIVEN compose.yml with one violation in demo-gdb
    broken = {**compose, "services": dict(compose["services"])}
    broken["services"]["demo-gdb"] = {**compose["services"]["demo-gdb"], **doc_change}
    # WHEN the policy is checked THEN exactly that is reported
    problems = _check_compose().problems(broken)
    assert len(problems) == 1 and problems[0].startswith("demo-gdb: ") and complaint in problems[0]


def test_the_policy_script_exit_status(tmp_path):
    check = _check_compose()
    assert check.main([str(COMPOSE)]) == 0
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  demo-gdb:\n    image: x\n    privileged: true\n")
    assert check.main([str(bad)]) == 1


# ---------------------------------------------------------------------------- same commands


def _native(reaper, target: str) -> list[str]:
    """The command line the Makefile's native target runs, after the interpreter."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    result = reaper.run(["make", "-s", "--no-print-directory", f"cmd-{target}"], cwd=REPO,
                        timeout=SHORT_TIMEOUT, env={"PATH": "/usr/bin:/bin", "RUN": "x"})
    assert result.returncode == 0, result.stderr
    return shlex.split(result.stdout)


@pytest.mark.parametrize("service", ["demo-gdb", "demo-lldb", "demo-crash", "demo-strace",
                                     "matrix"])
def test_each_service_runs_the_native_targets_command(reaper, compose, service):
    assert compose["services"][service]["command"] == ["python", *_native(reaper, service)]


def test_demo_fixed_service_runs_both_native_commands(reaper, compose):
    spawn = shlex.join(["python", *_native(reaper, "demo-fixed-spawn")])
    forkserver = shlex.join(["python", *_native(reaper, "demo-fixed-forkserver")])
    assert compose["services"]["demo-fixed"]["command"] == ["sh", "-c",
                                                             f"{spawn} && {forkserver}"]


def test_test_service_runs_make_test_and_shell_a_shell(compose):
    assert compose["services"]["test"]["command"] == ["make", "test"]
    assert compose["services"]["shell"]["command"] == ["bash"]
