"""Another Python interpreter to run a scenario in: found, versioned, its packages checked."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from lab.errors import BadInput

PROBE_TIMEOUT_S = 20.0  # starting an interpreter and importing importlib.util; generous
# The first of get_all_start_methods() is the default ("Returns a list of the supported start
# methods, the first of which is the default", the multiprocessing docs); unlike
# get_start_method() it does not fix the default as a side effect.
_PROBE = (
    "import importlib.metadata, importlib.util, json, multiprocessing, platform, sys\n"
    "print(json.dumps({'version': platform.python_version(),"
    " 'implementation': platform.python_implementation(),"
    " 'start_method': multiprocessing.get_all_start_methods()[0],"
    " 'in_venv': sys.prefix != sys.base_prefix,"
    " 'packages': {d.metadata['Name'].lower(): d.version for d in importlib.metadata"
    ".distributions() if (d.metadata['Name'] or '').lower() in sys.argv[1].split(',')},"
    " 'missing': [m for m in sys.argv[2:] if importlib.util.find_spec(m) is None]}))\n"
)
_VERSION = re.compile(r"^\d+\.\d+$")
# Where version managers keep interpreters that are not on PATH (pyenv without a global
# version has only shims, which refuse to run an unselected version).
_MANAGED = ("{pyenv}/versions/{v}.*/bin/python{v}", "~/.local/share/uv/python/cpython-{v}.*/bin/"
            "python{v}")


@dataclass(frozen=True)
class Interpreter:
    path: str  # absolute
    version: str  # e.g. "3.12.1"
    implementation: str = "CPython"
    start_method: str = "fork"  # multiprocessing's default for a user who never chose one
    in_venv: bool = False  # already a virtual environment's interpreter
    missing: list[str] = field(default_factory=list)  # of the modules asked about
    packages: dict[str, str] = field(default_factory=dict)  # lab.envinfo.INTERESTING ones

    @property
    def minor(self) -> str:
        """e.g. "3.12": the part of the version a results file is named after."""
        return ".".join(self.version.split(".")[:2])


def resolve(python: str) -> str:
    """The absolute path of ``python``: a path, a command on PATH, or a bare version ("3.12")
    found as python3.12 on PATH or under pyenv or uv. Raises BadInput when there is none."""
    candidates = [python]
    if _VERSION.match(python):
        pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
        candidates = [f"python{python}"] + sorted(
            (p for pattern in _MANAGED for p in glob.glob(os.path.expanduser(
                pattern.format(pyenv=pyenv, v=python)))), reverse=True)
    for candidate in candidates:
        path = shutil.which(candidate)
        if path is not None and _runs(path):
            return os.path.abspath(path)
    raise BadInput(f"--python {python!r}: no such interpreter",
                   "give a path, a command on PATH (e.g. python3.12) or a version (3.12)")


def _runs(path: str) -> bool:
    """False for a pyenv shim of a version pyenv has not selected (it exits 127)."""
    try:
        return subprocess.run([path, "-c", ""], capture_output=True, timeout=PROBE_TIMEOUT_S,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def describe(python: str, modules: tuple[str, ...] = ()) -> Interpreter:
    """Run interpreter ``python`` once: its version, start method and which of ``modules`` it
    cannot import. Raises BadInput when it is not found or does not run as a Python."""
    path = resolve(python)
    said = ""
    try:
        from lab.envinfo import INTERESTING

        done = subprocess.run([path, "-c", _PROBE, ",".join(INTERESTING), *modules],
                              capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, check=False)
        said = (done.stderr.strip().splitlines() or [""])[0]
        answer = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        raise BadInput(f"--python {python!r} does not run as a Python interpreter"
                       + (f" ({said})" if said else "")) from None
    return Interpreter(path=path, **answer)


def own() -> Interpreter:
    """The lab's own interpreter, described as any other (a fresh process: the default start
    method is the one this interpreter gives a program that never chose one)."""
    return describe(sys.executable)


def probe(python: str, modules: tuple[str, ...]) -> tuple[str, str, list[str]]:
    """Return (absolute path, version, modules it cannot import) of interpreter ``python``.

    Raises BadInput when it is not found or does not run as a Python interpreter.
    """
    found = describe(python, modules)
    return found.path, found.version, found.missing
