"""The Docker files, checked without a Docker engine: hadolint, the compose-spec schema, the
least-privilege policy, that each service runs the native target's own command line, that every
Compose installed here reads compose.yml, and the image's entrypoint, run natively.

No image is built and no container runs here: tests/test_docker_engine.py does that.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SESSION, SHORT_TIMEOUT

yaml = pytest.importorskip("yaml")

BIN = Path(sys.executable).parent
DOCKERFILE = REPO / "Dockerfile"
BROKER_DOCKERFILE = REPO / "docker" / "redis.Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint.py"
COMPOSE = REPO / "compose.yml"
EVIDENCE_MOUNT = "${LAB_HOST_CRASH_DUMPS:-./crash_dumps}:/lab/crash_dumps"


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


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, BROKER_DOCKERFILE],
                         ids=["Dockerfile", "docker/redis.Dockerfile"])
def test_dockerfile_passes_hadolint(reaper, dockerfile):
    result = reaper.run([_lint_tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"),
                         str(dockerfile)], timeout=SHORT_TIMEOUT)
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
    [extras] = [line.split(":=")[1].strip() for line in
                (REPO / "Makefile").read_text().splitlines() if line.startswith("EXTRAS :=")]
    assert f"pip install --no-cache-dir -e '.[{extras}]'" in text
    assert "find_python_gdb_extension" in text  # the build fails if py-bt would not work
    assert "--privileged" not in text
    # and it builds where only Debian's archive and PyPI are reachable: no `# syntax=` frontend
    # image to pull from Docker Hub
    assert not any(line.lower().startswith("# syntax=") for line in text.splitlines())
    # and the entrypoint that gives the host user the evidence wraps every command
    assert "COPY docker/entrypoint.py /usr/local/bin/lab-entrypoint" in text
    assert 'ENTRYPOINT ["python", "/usr/local/bin/lab-entrypoint"]' in text


def test_the_broker_image_is_debians_redis_on_the_labs_base():
    # GIVEN the two Dockerfiles WHEN their bases and the broker's packages are read
    bases = {path.name: [line.split()[1] for line in path.read_text().splitlines()
                         if line.startswith("FROM ")] for path in (DOCKERFILE, BROKER_DOCKERFILE)}
    # THEN the broker builds from the lab's own base (no other image to pull), with Debian's
    # redis-server, and does not run as root
    assert bases["redis.Dockerfile"] == bases["Dockerfile"]
    text = BROKER_DOCKERFILE.read_text()
    assert "apt-get install -y --no-install-recommends redis-server" in text
    assert "USER 65534:65534" in text


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
                 "test", "shell", "redis", "celery-redis"):
        assert name in services
    for name in ("demo-gdb", "demo-lldb", "demo-strace", "test", "shell", "celery-redis"):
        assert services[name]["cap_add"] == ["SYS_PTRACE"], name
    for name in ("demo-crash", "demo-fixed", "redis"):
        assert "cap_add" not in services[name], name
    # optional: the broker and its client start only with the celery profile
    assert services["redis"]["profiles"] == services["celery-redis"]["profiles"] == ["celery"]


def _lab_services(compose) -> dict:
    return {name: service for name, service in compose["services"].items()
            if isinstance(service.get("build"), dict) and service["build"]["context"] == "."}


def test_evidence_directories_are_bind_mounted(compose):
    assert len(_lab_services(compose)) == 9
    for name, service in _lab_services(compose).items():
        assert EVIDENCE_MOUNT in service["volumes"], name
        assert "./results:/lab/results" in service["volumes"], name


def test_no_container_has_a_network_and_the_broker_is_reached_through_its_namespace(compose):
    services = compose["services"]
    # GIVEN the lab's containers and the broker THEN none is on a network: loopback only
    for name, service in _lab_services(compose).items():
        expected = "service:redis" if name == "celery-redis" else "none"
        assert service["network_mode"] == expected, name
    assert services["redis"]["network_mode"] == "none"
    # and the broker's client waits for the broker's healthcheck, and reaches it on localhost
    assert services["celery-redis"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "LAB_CELERY_BROKER_URL=redis://localhost:6379/0" in \
        services["celery-redis"]["environment"]


def test_builds_take_the_network_the_makefile_names(compose):
    # A build reaches Debian's archive and PyPI through the default bridge, or the host's
    # network where the engine has none (the Makefile sets LAB_BUILD_NETWORK=host there).
    for name, service in compose["services"].items():
        if "build" in service:
            assert service["build"]["network"] == "${LAB_BUILD_NETWORK:-default}", name


def test_compose_yml_has_nothing_compose_1_29_rejects(compose):
    # docker-compose 1.29 (Debian bookworm) rejects a top-level `name` ("'name' does not match
    # any of the regexes"); the Makefile exports COMPOSE_PROJECT_NAME instead.
    assert set(compose) <= {"services", "x-lab", "x-ptrace"}


@pytest.mark.parametrize("command", [["docker", "compose"], ["docker-compose"]],
                         ids=["docker compose", "docker-compose"])
def test_every_compose_installed_here_reads_compose_yml(reaper, compose, command):
    # GIVEN a Compose implementation (no engine is needed to read the file)
    if shutil.which(command[0]) is None or reaper.run(
            [*command, "version"], timeout=SHORT_TIMEOUT).returncode != 0:
        pytest.skip(f"{' '.join(command)} is not installed here")
    # WHEN it reads and interpolates compose.yml, celery profile included
    result = reaper.run([*command, "--profile", "celery", "config"], cwd=REPO,
                        timeout=SHORT_TIMEOUT,
                        env={**os.environ, "LAB_OWNER": "1000:1000", "LAB_BUILD_NETWORK": "host"})
    # THEN it accepts it, with the lab's services, their command lines and the variables
    assert result.returncode == 0, result.stdout + result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert len(resolved) == 10
    assert resolved["demo-gdb"]["command"] == compose["services"]["demo-gdb"]["command"]
    assert resolved["demo-gdb"]["environment"]["LAB_OWNER"] == "1000:1000"
    # the suite's marker only where it is set: an empty one would mark every process
    assert resolved["demo-gdb"]["environment"].get("LAB_TEST_SESSION") in (None, SESSION)
    assert resolved["demo-gdb"]["build"]["network"] == "host"
    assert resolved["celery-redis"]["network_mode"] == "service:redis"



@pytest.mark.parametrize("doc_change, complaint", [
    ({"privileged": True}, "privileged is forbidden"),
    ({"security_opt": ["no-new-privileges:true", "seccomp:unconfined"]}, "unconfined"),
    ({"security_opt": []}, "needs no-new-privileges:true"),
    ({"cap_add": ["SYS_PTRACE", "SYS_ADMIN"]}, "beyond SYS_PTRACE"),
    ({"pid": "host"}, "pid: host"),
    ({"network_mode": "bridge"}, "the lab needs no network"),
    ({"cap_add": []}, "needs cap_add: [SYS_PTRACE]"),
    ({"volumes": ["./results:/lab/results"]}, "bind-mount ./crash_dumps"),
], ids=["privileged", "unconfined", "no-new-privileges", "extra-cap", "host-pid", "network",
        "no-ptrace", "no-evidence-mount"])
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


# ---------------------------------------------------------------------------- the entrypoint

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the image's entrypoint: Linux")
root_only = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                               reason="giving files to another user takes root")
OTHER = (54321, 54321)  # any uid and gid: no passwd entry is needed
# The command of the signal test: stops on the signal, writing a file as it goes.
STOPPABLE = """
import pathlib, signal, sys
def stop(signum, _frame):
    pathlib.Path(sys.argv[1], "stopped.txt").write_text(signal.Signals(signum).name)
    sys.exit(128 + signum)
for each in (signal.SIGINT, signal.SIGTERM):
    signal.signal(each, stop)
print("ready", flush=True)
while True:
    signal.pause()
"""


def _mounts(tmp_path: Path) -> tuple[Path, Path]:
    evidence, results = tmp_path / "crash_dumps", tmp_path / "results"
    evidence.mkdir()
    results.mkdir()
    return evidence, results


def _entrypoint_env(mounts, owner: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LAB_OWNER"}
    env["LAB_MOUNTS"] = " ".join(str(m) for m in mounts)
    if owner is not None:
        env["LAB_OWNER"] = owner
    return env


@linux_only
@pytest.mark.parametrize("command, status", [
    (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
    (["/nonexistent/command"], 127),
], ids=["exit=7", "killed", "missing"])
def test_entrypoint_exits_with_the_commands_status(reaper, tmp_path, command, status):
    result = reaper.run([sys.executable, str(ENTRYPOINT), *command], timeout=SHORT_TIMEOUT,
                        env=_entrypoint_env(_mounts(tmp_path), "0:0"))
    assert result.returncode == status, result.stderr
    if status == 127:  # one line that says what could not run
        assert result.stderr == "lab-entrypoint: cannot run /nonexistent/command: No such file " \
            "or directory\n"


@linux_only
@root_only
@pytest.mark.parametrize("owner", ["54321:54321", None], ids=["LAB_OWNER", "evidence-owner"])
def test_entrypoint_gives_what_the_command_wrote_to_the_host_user(reaper, tmp_path, owner):
    # GIVEN the mounts, one holding a file of another user from before
    evidence, results = _mounts(tmp_path)
    if owner is None:  # no LAB_OWNER: the evidence directory's owner is the host user
        os.chown(evidence, *OTHER)
    foreign = evidence / "someone-else.txt"
    foreign.write_text("x")
    os.chown(foreign, 777, 777)
    # WHEN a command run as root writes a run directory and a results file
    script = "mkdir -p $0/run/sub && echo {} > $0/run/sub/evidence.json && echo {} > $1/r.json"
    result = reaper.run([sys.executable, str(ENTRYPOINT), "sh", "-c", script, str(evidence),
                         str(results)], timeout=SHORT_TIMEOUT,
                        env=_entrypoint_env((evidence, results), owner))
    # THEN all it wrote belongs to the host user, and nothing else changed owner
    assert result.returncode == 0, result.stderr
    for path in (evidence / "run", evidence / "run" / "sub", evidence / "run" / "sub" /
                 "evidence.json", results / "r.json"):
        assert (path.stat().st_uid, path.stat().st_gid) == OTHER, path
    assert (foreign.stat().st_uid, foreign.stat().st_gid) == (777, 777)
    assert results.stat().st_uid == 0  # the mount itself is the host's business


@linux_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_entrypoint_passes_a_signal_on_and_still_hands_over(reaper, tmp_path, signum):
    # GIVEN a command under the entrypoint, ready (it said so), no terminal attached
    evidence, results = _mounts(tmp_path)
    owner = f"{OTHER[0]}:{OTHER[1]}" if os.geteuid() == 0 else "0:0"
    proc = reaper.popen([sys.executable, str(ENTRYPOINT), sys.executable, "-c", STOPPABLE,
                         str(evidence)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        env=_entrypoint_env((evidence, results), owner))
    assert proc.stdout.readline() == b"ready\n"
    # WHEN docker-init passes `docker stop`'s SIGTERM (or a client's SIGINT) to the entrypoint
    os.kill(proc.pid, signum)
    # THEN the command gets it, stops, and its status and its file come back
    assert proc.wait(timeout=SHORT_TIMEOUT) == 128 + signum
    stopped = evidence / "stopped.txt"
    assert stopped.read_text() == signal.Signals(signum).name
    if os.geteuid() == 0:
        assert stopped.stat().st_uid == OTHER[0]
