"""The lab in Docker, on a real engine: the image built once, the demos run through the Makefile.

``make build DOCKER=1`` builds the image once per session; each ``make demo-* DOCKER=1`` then runs
its compose.yml service for real (gdb, lldb and strace attach inside the container), as a user
who is not root, and the evidence is read on the host: verdict, debugger, frames, watch mode, and
who owns the files. A service without SYS_PTRACE must fail with the lab's one-line ptrace error,
and the Celery production shape runs against the broker image built from Debian's redis-server.
Nothing may be left: every container is removed (``run --rm``, ``down``), and the containers'
processes carry the session's marker (compose.yml passes LAB_TEST_SESSION in), so the suite's
check for left processes sees them too.

Needs a Docker engine and Compose (``docker compose`` or docker-compose): without one, every test
here is skipped with one line saying why (``.ci/run`` starts one with
``../shared/tools/docker-engine start``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import LONG_TIMEOUT, REPO, SESSION, SHORT_TIMEOUT, Reaper

IMAGE = "fork-crash-lab:local"
BROKER_IMAGE = "fork-crash-lab-redis:local"
# A cold build (the base image's packages, then the lab's Python dependencies from PyPI) takes
# about 100 s on 2 cores; ten minutes only catches a hang.
BUILD_TIMEOUT = 600.0
# How long the broker may take to report healthy (its healthcheck runs every second).
HEALTHY_TIMEOUT = 60.0
POLL_S = 0.2
# Our own Compose project: `down` and the checks below see only this session's containers.
PROJECT = f"fcl-test-{SESSION[:12]}"
# The user who runs make when the suite runs as root: any uid, no passwd entry needed.
OTHER_UID = 54321
# Variables of an outer make or of the caller that would change what the inner make does.
OUTER_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS", "DOCKER",
                   "CRASH_DUMPS", "LAB_CRASH_DUMPS", "COMPOSE", "LAB_OWNER", "LAB_BUILD_NETWORK",
                   "LAB_HOST_CRASH_DUMPS", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE")
# Docker's default seccomp profile lets ptrace, process_vm_readv and process_vm_writev through
# without CAP_SYS_PTRACE only on kernels 4.8 and later (the kernel checks ptrace itself there);
# before, only with it. Where the kernel has no Yama either, a same-uid tracer needs no
# capability at all, so the test applies the older rule itself (see _ptrace_override).
PTRACE_NEEDS_THE_CAPABILITY = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["ptrace", "process_vm_readv", "process_vm_writev"],
                  "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                  "excludes": {"caps": ["CAP_SYS_PTRACE"]}}],
}


def _run(args, timeout: float, env=None, cwd=REPO) -> subprocess.CompletedProcess:
    """Run outside a test (session fixtures): with a deadline, and nothing left on the way out."""
    reaper = Reaper()
    try:
        return reaper.run(args, timeout=timeout, env=env, cwd=cwd)
    finally:
        reaper.cleanup()


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OUTER_VARIABLES}
    env["COMPOSE_PROJECT_NAME"] = PROJECT
    return env


def _compose_command() -> list[str] | None:
    """What the Makefile finds: the v2 plugin, else docker-compose; None when neither works."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            if subprocess.run([*command, "version"], capture_output=True,
                              timeout=SHORT_TIMEOUT).returncode == 0:
                return command
        except subprocess.TimeoutExpired:
            continue
    return None


def _no_engine() -> str | None:
    """Why no engine can be used here (one line), or None."""
    if shutil.which("docker") is None:
        return "no Docker engine: the docker command is not installed"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True,
                              timeout=SHORT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "no Docker engine: 'docker info' did not answer"
    if info.returncode != 0:
        return ("no Docker engine: 'docker info' failed (start one, e.g. "
                "../shared/tools/docker-engine start)")
    if _compose_command() is None:
        return "no Compose: neither 'docker compose' nor docker-compose is installed"
    return None


def _image_ids() -> list[str]:
    """The IDs of the lab's two images (those that exist)."""
    found = _run(["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE, BROKER_IMAGE],
                 SHORT_TIMEOUT)
    return found.stdout.split()


@dataclass
class Engine:
    compose: list[str]
    env: dict[str, str]
    build_s: float
    image_mb: float

    def run_compose(self, *args: str, timeout: float = LONG_TIMEOUT, files=(), evidence=None,
                    reaper=None) -> subprocess.CompletedProcess:
        """``COMPOSE [-f FILE]... ARGS`` in the repository; ``evidence``: the host directory
        bind-mounted at /lab/crash_dumps (LAB_HOST_CRASH_DUMPS)."""
        command = [*self.compose, *(f for path in files for f in ("-f", str(path))), *args]
        env = {**self.env, **({"LAB_HOST_CRASH_DUMPS": str(evidence)} if evidence else {})}
        if reaper is None:
            return _run(command, timeout, env=env)
        return reaper.run(command, timeout=timeout, env=env, cwd=REPO)

    def containers(self) -> list[str]:
        """This session's containers, running or not (``docker ps -a`` by project label)."""
        listed = _run(["docker", "ps", "-aq", "--filter",
                       f"label=com.docker.compose.project={PROJECT}"], SHORT_TIMEOUT)
        return listed.stdout.split()


@pytest.fixture(scope="session")
def engine() -> Engine:
    """A Docker engine with the lab's images, built once (``make build DOCKER=1``); skips when
    there is none. Afterwards the session's Compose project is taken down, whatever happened."""
    reason = _no_engine()
    if reason:
        pytest.skip(reason)
    env = _environment()
    before = _image_ids()
    started = time.monotonic()
    built = _run(["make", "--no-print-directory", "build", "DOCKER=1"], BUILD_TIMEOUT, env=env)
    build_s = time.monotonic() - started
    assert built.returncode == 0, explain(built)
    # A rebuild leaves the previous image untagged (gigabytes each time): remove it, unless a
    # container still uses it.
    replaced = set(before) - set(_image_ids())
    if replaced:
        _run(["docker", "image", "rm", *replaced], SHORT_TIMEOUT)
    size = _run(["docker", "image", "inspect", "--format", "{{.Size}}", IMAGE], SHORT_TIMEOUT)
    assert size.returncode == 0, explain(size)
    found = Engine(_compose_command(), env, build_s, int(size.stdout) / 1e6)
    try:
        yield found
    finally:
        found.run_compose("--profile", "celery", "down", "--remove-orphans")


@pytest.fixture
def no_container_left(engine):
    """After the test: none of this session's containers exists (each run was --rm)."""
    yield
    left = engine.containers()
    if left:
        _run(["docker", "rm", "-f", *left], SHORT_TIMEOUT)
        pytest.fail(f"containers left behind: {left}")


@pytest.fixture
def caller(engine):
    """Who runs make, and where: a copy of the Makefile, compose.yml and docker/ in a directory
    the caller owns. Root runs it as uid 54321 with the Docker socket's group (setpriv); anyone
    else runs it as themselves. Returns (argv prefix, directory, uid, gid)."""
    directory = Path(tempfile.mkdtemp(prefix="lab-docker-caller-"))
    try:
        for name in ("Makefile", "compose.yml"):
            shutil.copy2(REPO / name, directory / name)
        shutil.copytree(REPO / "docker", directory / "docker",  # Compose checks build contexts
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("crash_dumps", "results", "docs"):
            (directory / name).mkdir()
        if os.geteuid() != 0:
            yield [], directory, os.getuid(), os.getgid()
            return
        socket = Path(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
                      .removeprefix("unix://"))
        try:
            mode = socket.stat()
        except OSError:
            pytest.skip(f"no Docker socket at {socket}: no other user can reach the engine")
        if not mode.st_mode & stat.S_IRWXG or shutil.which("setpriv") is None:
            pytest.skip(f"only root can use {socket} here (no group access, or no setpriv)")
        for path in (directory, *directory.rglob("*")):
            os.chown(path, OTHER_UID, OTHER_UID)
        directory.chmod(0o755)
        yield (["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}",
                f"--groups={mode.st_gid}", "--"], directory, OTHER_UID, OTHER_UID)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n" \
           f"--- stderr\n{result.stderr[-4000:]}"


def runs(base: Path) -> list[dict]:
    """The evidence documents under ``base``, oldest first."""
    return [json.loads((d / "evidence.json").read_text())
            for d in sorted(base.iterdir()) if (d / "evidence.json").is_file()]


# ---------------------------------------------------------------------------- the image


def test_make_build_builds_the_lab_image_once(engine, measure):
    # GIVEN the session's build (`make build DOCKER=1`, timed by the fixture)
    measure(f"make build DOCKER=1 ({IMAGE}: {engine.image_mb:.0f} MB)", engine.build_s)
    # THEN both images exist, and the lab's runs as root behind its entrypoint
    inspect = _run(["docker", "image", "inspect", "--format",
                    "{{json .Config.User}} {{json .Config.Entrypoint}}", IMAGE, BROKER_IMAGE],
                   SHORT_TIMEOUT)
    assert inspect.returncode == 0, explain(inspect)
    lab, broker = inspect.stdout.splitlines()
    assert lab == '"" ["python","/usr/local/bin/lab-entrypoint"]'
    assert broker.startswith('"65534:65534"')  # the broker is not root


# ---------------------------------------------------------------------------- the demos


@dataclass(frozen=True)
class Demo:
    launchers: tuple[str, ...]
    verdict: str
    debugger: str | None
    watch_mode: str
    transcript: str | None = None
    python_frames: bool = False


DEMOS = {
    "demo-gdb": Demo(("fork",), "deadlock", "gdb", "polling", "gdb.txt", python_frames=True),
    "demo-lldb": Demo(("fork",), "deadlock", "lldb", "debugger", "lldb.txt"),
    "demo-crash": Demo(("fork",), "deadlock", None, "polling"),
    "demo-strace": Demo(("fork",), "deadlock", None, "polling", "strace.txt"),
    "demo-fixed": Demo(("mp-forkserver", "mp-spawn"), "ok", None, "polling"),
}


@pytest.mark.slow
@pytest.mark.parametrize("target", DEMOS, ids=[f"target={t}" for t in DEMOS])
def test_demo_runs_in_docker_and_the_caller_owns_the_evidence(reaper, engine, caller,
                                                               no_container_left, measure,
                                                               target):
    demo = DEMOS[target]
    prefix, directory, uid, gid = caller
    # WHEN a user who is not root runs the demo in Docker
    started = time.monotonic()
    result = reaper.run([*prefix, "make", "--no-print-directory", target, "DOCKER=1"],
                        timeout=LONG_TIMEOUT, cwd=directory,
                        env={**engine.env, "HOME": str(directory)})
    measure(f"make {target} DOCKER=1", time.monotonic() - started)
    # THEN it ends as expected, and the evidence is in ./crash_dumps on the host
    assert result.returncode == 0, explain(result)
    documents = runs(directory / "crash_dumps")
    assert sorted(d["launcher"] for d in documents) == sorted(demo.launchers)
    for evidence in documents:
        assert evidence["expected"] == evidence["verdict"] == demo.verdict
        # the container has no process connector: the lab polled /proc (or lldb ran the child)
        assert evidence["watch_mode"] == demo.watch_mode
        debugger = evidence.get("debugger") or {}
        assert debugger.get("name") == demo.debugger
        if demo.debugger:  # it attached inside the container and read the blocked thread
            assert debugger.get("error") is None
            [thread] = debugger["threads"]
            assert thread["frames"] and thread["frames"][0]["function"]
            assert bool(thread.get("python_frames")) == demo.python_frames
        if demo.transcript:
            assert (directory / "crash_dumps" / Path(evidence["evidence_dir"]).name
                    / demo.transcript).stat().st_size > 0
    # and every file and directory it wrote belongs to the caller, not to root
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in (directory / "crash_dumps").rglob("*")}
    assert owners == {(uid, gid)}


# ---------------------------------------------------------------------------- ptrace


def _ptrace_override(tmp_path: Path) -> list[Path]:
    """The compose files that make ptrace need CAP_SYS_PTRACE here as well.

    On a kernel with Yama (ptrace_scope 1 or more) Docker's defaults already do: no extra file.
    Without Yama, a same-uid tracer needs no capability, so both services get a seccomp profile
    that allows ptrace only with CAP_SYS_PTRACE (Docker's own rule for kernels before 4.8).
    """
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        scope = 0
    if scope >= 1:
        return []
    profile = tmp_path / "seccomp-ptrace-needs-cap.json"
    profile.write_text(json.dumps(PTRACE_NEEDS_THE_CAPABILITY))
    override = tmp_path / "compose.ptrace.yml"
    options = f"[no-new-privileges:true, 'seccomp={profile}']"
    override.write_text("services:\n"
                        f"  demo-crash:\n    security_opt: {options}\n"
                        f"  demo-gdb:\n    security_opt: {options}\n")
    return [REPO / "compose.yml", override]


@pytest.mark.slow
@pytest.mark.parametrize("service, capability", [("demo-crash", False), ("demo-gdb", True)],
                         ids=["service=demo-crash (no SYS_PTRACE)", "service=demo-gdb"])
def test_gdb_attaches_in_a_service_only_with_sys_ptrace(reaper, engine, no_container_left,
                                                         tmp_path, service, capability):
    files = _ptrace_override(tmp_path)
    evidence_dir = tmp_path / "crash_dumps"
    evidence_dir.mkdir()
    # WHEN the GDB demo's command runs in the service
    result = engine.run_compose("run", "--rm", service, "python", "-m", "lab", "run",
                                "chromadb-tokio", "--launcher", "fork", "--debugger", "gdb",
                                files=files, evidence=evidence_dir, reaper=reaper)
    output = result.stdout + result.stderr
    [evidence] = runs(evidence_dir)
    assert evidence["verdict"] == "deadlock"  # proven from /proc either way
    assert "Traceback" not in output
    if capability:
        # THEN with SYS_PTRACE gdb attaches and reads the blocked thread
        assert result.returncode == 0, explain(result)
        assert evidence["debugger"]["threads"][0]["frames"]
        return
    # THEN without it the lab stops with its ptrace error (exit 6): one line, with the remedy
    assert result.returncode == 6, explain(result)
    [line] = [line for line in output.splitlines() if line.startswith("lab: error:")]
    assert "may not attach" in line and "cap_add: [SYS_PTRACE]" in line
    assert evidence["debugger"]["error"] and not evidence["debugger"]["threads"]


# ---------------------------------------------------------------------- daemons in the container

DAEMON_CHECK = (
    "python -m lab watch --json --quiet --debugger none --timeout 2 --out /lab/crash_dumps "
    "-- python tests/programs/double_fork_daemon.py > /lab/crash_dumps/watch.json; "
    "echo \"left: $(ps -eo args | grep -c '^python tests/programs/[d]ouble_fork_daemon')\"")


@pytest.mark.slow
def test_a_double_fork_daemon_is_stopped_in_the_container_too(reaper, engine, no_container_left,
                                                             tmp_path):
    # GIVEN a container, where the lab has no process connector and polls /proc
    evidence_dir = tmp_path / "crash_dumps"
    evidence_dir.mkdir()
    # WHEN it watches a program whose middle child calls setsid() and forks a daemon
    result = engine.run_compose("run", "--rm", "demo-crash", "sh", "-c", DAEMON_CHECK,
                                evidence=evidence_dir, reaper=reaper)
    # THEN the daemon is followed (a hang at the timeout, in polling mode) and stopped: no
    # process of it is left in the container once the lab has returned
    assert "left: 0" in result.stdout, explain(result)
    evidence = json.loads((evidence_dir / "watch.json").read_text())
    assert evidence["watch_mode"] == "polling" and evidence["verdict"] == "hang"
    [daemon] = [p for p in evidence["processes"] if p["verdict"] == "hang"]
    assert daemon["killed_by_lab"]


# ---------------------------------------------------------------------------- Celery on Redis


@pytest.fixture(scope="module")
def broker(engine):
    """compose.yml's redis service, up and healthy (polled with a deadline); down afterwards."""
    up = engine.run_compose("--profile", "celery", "up", "-d", "redis")
    try:
        assert up.returncode == 0, explain(up)
        [container] = _run(["docker", "ps", "-q", "--filter",
                            f"label=com.docker.compose.project={PROJECT}", "--filter",
                            "label=com.docker.compose.service=redis"], SHORT_TIMEOUT).stdout.split()
        deadline = time.monotonic() + HEALTHY_TIMEOUT
        health = ""
        while health != "healthy":
            assert time.monotonic() < deadline, f"redis is {health!r} after {HEALTHY_TIMEOUT} s"
            health = _run(["docker", "inspect", "--format", "{{.State.Health.Status}}",
                           container], SHORT_TIMEOUT).stdout.strip()
            if health != "healthy":
                time.sleep(POLL_S)  # polling a state with a deadline, not synchronisation
        yield container
    finally:
        down = engine.run_compose("--profile", "celery", "down", "--remove-orphans")
        assert down.returncode == 0, explain(down)
        assert engine.containers() == []


def _redis(container: str, *command: str) -> str:
    result = _run(["docker", "exec", container, "redis-cli", *command], SHORT_TIMEOUT)
    assert result.returncode == 0, explain(result)
    return result.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("pool, verdict", [("prefork", "deadlock"), ("solo", "ok")],
                         ids=["pool=prefork", "pool=solo"])
def test_celery_on_the_redis_service_keeps_its_verdicts(reaper, engine, broker, tmp_path,
                                                        measure, pool, verdict):
    evidence_dir = tmp_path / "crash_dumps"
    evidence_dir.mkdir()
    # GIVEN the broker built from Debian's redis-server, healthy
    # WHEN the lab runs the Celery scenario in celery-redis, which joins the broker's namespace
    started = time.monotonic()
    result = engine.run_compose("--profile", "celery", "run", "--rm", "celery-redis", "python",
                                "-m", "lab", "run", "celery-chromadb", "--pool", pool,
                                evidence=evidence_dir, reaper=reaper)
    measure(f"compose run celery-redis: celery-chromadb --pool {pool}",
            time.monotonic() - started)
    # THEN the verdict is the filesystem broker's (exit 0: as expected)
    assert result.returncode == 0, explain(result)
    [evidence] = runs(evidence_dir)
    assert evidence["expected"] == evidence["verdict"] == verdict
    # and the task went through Redis, which is left with an empty queue
    run_dir = evidence_dir / Path(evidence["evidence_dir"]).name
    log = (run_dir / "celery-worker.log").read_text()
    assert re.search(r"Connected to redis://\S*localhost:6379/0", log), log[-3000:]
    assert _redis(broker, "llen", "celery") == "0"
    assert _redis(broker, "hlen", "unacked") == "0"
    # and only the broker is still up: the lab's container is gone
    assert engine.containers() == [broker]

