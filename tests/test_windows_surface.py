"""What Windows lacks, kept off the portable path: checked here, where Windows cannot run.

The portable backend is what Windows runs. Its psutil calls are checked by running them on
Linux (tests/test_portable_backend.py); what cannot be run here is a call to a part of ``os``,
``signal`` or ``select`` that Windows' CPython does not have (``os.killpg``, ``os.WNOHANG``,
``signal.SIGKILL``, ``os.mkfifo`` ...): there it is an AttributeError in the middle of a run.
This test finds the modules a real portable run imports (the lab's side and the scenario
host's), and fails on every such reference that is not under a guard (``hasattr``,
``sys.platform``, ``os.name``, ``except AttributeError``, an early return) and not on a branch
the portable backend never takes on Windows, listed below with its reason; and on
``os.kill(pid, 0)``, which on Windows sends CTRL_C_EVENT instead of checking a PID.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

# Attributes that CPython does not have on Windows (from its documentation: "Availability: Unix"
# or "not Windows"); os.fchmod is here because only 3.13 added it there.
POSIX_ONLY = {
    "os": {"fork", "forkpty", "killpg", "getuid", "geteuid", "getgid", "getegid", "getsid",
           "setsid", "getpgid", "setpgid", "getpgrp", "setpgrp", "mkfifo", "mknod", "WNOHANG",
           "WUNTRACED", "WCONTINUED", "O_NONBLOCK", "O_CLOEXEC", "O_NOFOLLOW", "O_DIRECTORY",
           "wait", "wait3", "wait4", "waitid", "WIFSTOPPED", "WIFSIGNALED", "WIFEXITED",
           "WEXITSTATUS", "WTERMSIG", "WSTOPSIG", "WCOREDUMP", "WIFCONTINUED",
           "register_at_fork", "sched_getaffinity", "pipe2", "getloadavg", "uname", "sysconf",
           "statvfs", "chown", "lchown", "fchown", "fchmod", "getresuid", "nice", "pidfd_open",
           "setuid", "openpty", "ttyname", "sync", "posix_spawn"},
    "signal": {"SIGKILL", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGHUP",
               "SIGQUIT", "SIGCHLD", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE", "SIGTRAP",
               "SIGBUS", "SIGSYS", "SIGXCPU", "SIGPROF", "SIGVTALRM", "SIGURG", "SIGWINCH",
               "SIGIO", "pthread_sigmask", "pthread_kill", "setitimer", "getitimer", "alarm",
               "pause", "siginterrupt", "sigwait", "sigwaitinfo", "sigtimedwait", "sigpending",
               "SIG_BLOCK", "SIG_UNBLOCK", "SIG_SETMASK", "pidfd_send_signal", "ITIMER_REAL"},
    "select": {"poll", "epoll", "kqueue", "devpoll"},
}
POSIX_MODULES = {"fcntl", "resource", "pwd", "grp", "termios", "pty", "tty", "posix", "syslog"}
GUARDS = ("hasattr(", "sys.platform", "os.name", "CAN_WAITPID")

# (file, name): why Windows never reaches it on the portable path.
NOT_ON_WINDOWS = {
    ("lab/reports.py", "os.mkfifo"): "the FIFO channel: only a backend with report_fifo (Linux)",
    ("lab/reports.py", "os.O_NONBLOCK"): "the FIFO channel: only a backend with report_fifo",
    ("lab/backend.py", "os.killpg"): "PosixSignals: the Linux backend's signals",
    ("lab/process/exits.py", "os.WIFSIGNALED"): "from_wait_status: only waitpid(2) gives a "
                                                "wait status; Windows' ends come from Popen",
    ("lab/process/exits.py", "os.WCOREDUMP"): "from_wait_status, as above",
    ("lab/process/__init__.py", "signal.SIGCONT"): "wait_released: after a debugger detaches; "
                                                   "the debugger paths are Linux and macOS",
    ("lab/scenarios/host.py", "signal.SIGSTOP"): "LAB_HOLD_CHILD: set only by the debugger "
                                                 "paths (Linux and macOS)",
}


def _source(node: ast.AST, text: str) -> str:
    return ast.get_source_segment(text, node) or ""


def _guarded(reference: ast.AST, parents: dict, text: str) -> bool:
    """Is ``reference`` only reached where the name exists?"""
    child, node = reference, parents.get(reference)
    while node is not None:
        if isinstance(node, (ast.If, ast.IfExp, ast.While)) and child is not node.test \
                and any(g in _source(node.test, text) for g in GUARDS):
            return True
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            earlier = node.values[:node.values.index(child)] if child in node.values else []
            if any(g in _source(v, text) for v in earlier for g in GUARDS):
                return True
        if isinstance(node, ast.Try) and child in node.body and any(
                "AttributeError" in _source(h.type, text) for h in node.handlers if h.type):
            return True
        body = getattr(node, "body", None)
        if isinstance(body, list) and child in body:  # an early return before it
            for statement in body[:body.index(child)]:
                if (isinstance(statement, ast.If)
                        and any(g in _source(statement.test, text) for g in GUARDS)
                        and isinstance(statement.body[-1], ast.Return)):
                    return True
        child, node = node, parents.get(node)
    return False


def unguarded(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    tree = ast.parse(text)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.attr in POSIX_ONLY.get(node.value.id, ())):
            name = f"{node.value.id}.{node.attr}"
        elif (isinstance(node, ast.Call) and _source(node.func, text) == "os.kill"
              and len(node.args) == 2 and isinstance(node.args[1], ast.Constant)
              and node.args[1].value == 0):
            name = "os.kill(pid, 0)"  # Windows: signal 0 is CTRL_C_EVENT, sent to a console
        elif isinstance(node, ast.Import):
            name = next((a.name for a in node.names if a.name.split(".")[0] in POSIX_MODULES), "")
        elif isinstance(node, ast.ImportFrom):
            name = node.module if (node.module or "").split(".")[0] in POSIX_MODULES else ""
        else:
            continue
        if name and not _guarded(node, parents, text):
            found.append((node.lineno, name))
    return found


def _modules_of_a_run(tmp_path: Path, argv: list[str], module: str) -> set[str]:
    """The lab's modules a real process imported, running ``python -m MODULE ARGV`` (from a
    script file: a spawned child re-reads its parent's main script)."""
    n = len(list(tmp_path.glob("modules-*.json")))
    out, script = tmp_path / f"modules-{n}.json", tmp_path / f"dump_modules_{n}.py"
    script.write_text(
        "import atexit, json, runpy, sys\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted(\n"
        "    m for m in sys.modules if m == 'lab' or m.startswith('lab.')))))\n"
        f"sys.argv = [{module!r}, *{argv!r}]\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n")
    subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                   env={**os.environ, "LAB_BACKEND": "portable"}, timeout=120)
    assert out.exists(), f"python -m {module} {' '.join(argv)} did not finish"
    return {module, *json.loads(out.read_text())}  # run as __main__, so not listed by name


@pytest.fixture(scope="module")
def portable_path(tmp_path_factory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("surface")
    out = str(tmp / "runs")
    modules = (_modules_of_a_run(tmp, ["run", "python-lock-held", "--launcher", "mp-spawn",
                                       "--debugger", "none", "--timeout", "2", "--out", out],
                                 "lab")
               | _modules_of_a_run(tmp, ["run", "breakpoint-trap", "--launcher", "mp-spawn",
                                         "--out", out], "lab")
               | _modules_of_a_run(tmp, ["python-lock-reinit", "--launcher", "mp-spawn"],
                                   "lab.scenarios.host")
               # the cells the workflow's Windows job runs: spawn, through the matrix
               | _modules_of_a_run(tmp, ["matrix", "--trials", "1", "--only",
                                         "python-lock-held/mp-spawn,pickle-by-path/pool-spawn",
                                         "--results-dir", str(tmp / "results"), "--docs-dir",
                                         str(tmp / "docs"), "--out", out], "lab"))
    import importlib.util

    files = []
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            files.append(Path(spec.origin))
    return files + sorted((REPO / "lab" / "hook" / "startup").glob("*.py"))


def test_a_portable_run_was_found_to_import_the_run_path(portable_path):
    names = {p.relative_to(REPO).as_posix() for p in portable_path}
    for expected in ("lab/process/tree.py", "lab/portable/backend.py", "lab/reports.py",
                     "lab/session.py", "lab/scenarios/host.py", "lab/launchers/__init__.py",
                     "lab/matrix/__init__.py", "lab/trials.py"):
        assert expected in names, sorted(names)


def test_the_portable_path_calls_nothing_windows_lacks_unguarded(portable_path):
    found = []
    for path in portable_path:
        relative = path.relative_to(REPO).as_posix()
        for line, name in unguarded(path):
            if (relative, name) not in NOT_ON_WINDOWS:
                found.append(f"{relative}:{line}: {name}")
    assert not found, ("POSIX-only names on the path Windows runs, unguarded (use hasattr, "
                       "getattr or the backend's signal()):\n" + "\n".join(found))


def test_the_reasons_listed_still_apply(portable_path):
    # a stale entry would let a new unguarded use through unnoticed
    seen = {(p.relative_to(REPO).as_posix(), name) for p in portable_path
            for _, name in unguarded(p)}
    assert set(NOT_ON_WINDOWS) <= seen, set(NOT_ON_WINDOWS) - seen


@pytest.mark.parametrize("source, flagged", [
    ("import os\nos.killpg(1, 9)\n", True),
    ("import os\nif hasattr(os, 'killpg'):\n    os.killpg(1, 9)\n", False),
    ("import os\ndef f():\n    if not hasattr(os, 'killpg'):\n        return\n"
     "    os.killpg(1, 9)\n", False),
    ("import os, sys\nx = sys.platform == 'darwin' and os.geteuid()\n", False),
    ("import os\ntry:\n    os.getsid(1)\nexcept (OSError, AttributeError):\n    pass\n", False),
    ("import os\ntry:\n    os.getsid(1)\nexcept OSError:\n    pass\n", True),
    ("import signal\nKILL = getattr(signal, 'SIGKILL', signal.SIGTERM)\n", False),
    ("import fcntl\n", True),
    ("import os\nos.kill(1, 0)\n", True),
    ("import os, sys\nif sys.platform != 'win32':\n    os.kill(1, 0)\n", False),
])
def test_the_checker_tells_a_guard_from_none(tmp_path, source, flagged):
    path = tmp_path / "sample.py"
    path.write_text(source)
    assert bool(unguarded(path)) is flagged
