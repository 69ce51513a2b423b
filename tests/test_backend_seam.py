"""The process backend is the one way the run path reads another process (issue: one house).

The Linux backend answers from /proc for real processes started here; the portable one says
what it cannot see (an empty answer or None, never a guess); and the house keeps its shape:
no module on the run path outside lab/linux/ opens /proc itself, and no import runs in a
circle.
"""

from __future__ import annotations

import ast
import ctypes
import inspect
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, SHORT_TIMEOUT, wait_until
from lab import process
from lab.backend import Backend, Gone
from lab.portable.backend import PortableBackend

LAB = REPO / "lab"
# Their own reads are theirs (the issue): the startup hook and the scenarios run inside the
# program, the bench measures /proc itself; lab/linux/ is the backend.
OWN_READS = ("hook", "scenarios", "bench", "linux")
OPENS_PROC = re.compile(r"""(?:open|listdir|readlink|scandir|Path)\(\s*f?["']/proc""")
ASKED = ("fd_target", "holders", "thread_group", "thread_names", "forking_thread",
         "executable", "syscall_lines", "dumpable_bytes", "read_memory", "pid_max",
         "ptrace_scope", "mapped", "trace_refusal")

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _linux():
    from lab.linux.backend import LinuxBackend

    return LinuxBackend()


@pytest.mark.parametrize("name", ASKED)
def test_both_backends_answer_every_question_of_the_interface(name):
    declared = inspect.signature(getattr(Backend, name))
    for backend in (PortableBackend, *([_linux().__class__] if sys.platform == "linux" else [])):
        assert inspect.signature(getattr(backend, name)).parameters.keys() == \
            declared.parameters.keys(), (backend.__name__, name)


@linux_only
def test_the_linux_backend_names_threads_and_the_thread_that_forked(reaper):
    # GIVEN a process whose thread "forker" forks a child that waits
    program = ("import ctypes, os, threading, sys\n"
               "def fork():\n"
               "    ctypes.CDLL(None).prctl(15, b'forker')  # PR_SET_NAME: the OS's name\n"
               "    pid = os.fork()\n"
               "    if pid == 0:\n"
               "        sys.stdin.read(); os._exit(0)\n"
               "    print(pid, threading.get_native_id(), flush=True)\n"
               "    sys.stdin.read()\n"
               "t = threading.Thread(target=fork, name='forker'); t.start(); t.join()\n")
    proc = reaper.popen([sys.executable, "-c", program], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
    child, forker = map(int, proc.stdout.readline().split())
    backend = _linux()
    # THEN its threads are named as the OS names them, and the forking thread is found
    names = backend.thread_names(proc.pid)
    assert names[forker] == "forker" and proc.pid in names
    assert backend.forking_thread(proc.pid, child) == forker
    assert backend.executable(proc.pid) == os.path.realpath(sys.executable)
    # AND each thread's system call line is there, a number once it sleeps in read(2)
    def blocked():
        line = backend.syscall_lines(child).get(child, "")
        return line.split()[0].isdigit() if line and line != "running" else False

    wait_until(blocked, "the child sleeps in a system call")
    assert list(backend.syscall_lines(child)) == [child]
    assert backend.dumpable_bytes(proc.pid) > 0
    proc.stdin.close()
    proc.wait(timeout=SHORT_TIMEOUT)
    wait_until(lambda: not process.alive(child), "the child has ended")
    try:  # an orphan comes to this process when an earlier test made it a subreaper
        os.waitpid(child, 0)
    except ChildProcessError:
        pass
    wait_until(lambda: not os.path.exists(f"/proc/{child}"), "the child has been reaped")
    with pytest.raises(Gone):
        backend.thread_names(child)
    assert backend.forking_thread(proc.pid, child) is None and backend.syscall_lines(child) == {}


@linux_only
def test_the_linux_backend_reads_memory_without_stopping_the_process():
    marker = ctypes.create_string_buffer(b"lab-seam-7\0")
    backend = _linux()
    assert backend.read_memory(os.getpid(), ctypes.addressof(marker), 10) == b"lab-seam-7"
    assert backend.read_memory(os.getpid(), 8, 10) is None  # unmapped: None, not an error
    assert backend.pid_max() >= 32768


def test_the_portable_backend_says_what_it_cannot_see(reaper):
    backend = PortableBackend()
    me = os.getpid()
    assert backend.thread_names(me) == {}  # psutil names no threads
    assert backend.forking_thread(me, me) is None
    assert backend.syscall_lines(me) == {}
    assert backend.dumpable_bytes(me) is None
    assert backend.read_memory(me, id(backend), 8) is None
    assert backend.ptrace_scope() is None
    assert backend.executable(me) == os.path.realpath(sys.executable)


def _run_path_modules():
    for path in sorted(LAB.rglob("*.py")):
        relative = path.relative_to(LAB)
        if relative.parts[0] not in OWN_READS:
            yield path


def test_no_run_path_module_outside_lab_linux_opens_proc_itself():
    found = [f"{path.relative_to(REPO)}:{number}"
             for path in _run_path_modules()
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if OPENS_PROC.search(line) and not line.lstrip().startswith("#")]
    # soak.py counts its own descriptors and threads (/proc/self), as the bench does
    assert [f for f in found if not f.startswith("lab/soak.py")] == []


def _imports() -> dict[str, set[str]]:
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in LAB.rglob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
                targets = [t if t in modules else base for t in targets]
            else:
                continue
            edges[name] |= {t for t in targets if t in modules and t != name}
    return edges


def test_no_import_runs_in_a_circle():
    edges = _imports()
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert circles == [], "\n".join(" -> ".join(c) for c in circles)


def test_the_debugger_names_are_typed_once():
    from lab import debuggers
    from lab.debugger_registry import DEBUGGERS

    assert debuggers.names() == list(DEBUGGERS)
    typed = [f"{path.relative_to(REPO)}:{number}"
             for path in [*LAB.rglob("*.py"), REPO / "scripts" / "lldb_attach_child.py"]
             if path.name != "debugger_registry.py"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"""(=|choices=)\s*\(\s*["'](auto|gdb)["'],\s*["'](gdb|lldb)["']""",
                          line)]
    assert typed == [], typed
