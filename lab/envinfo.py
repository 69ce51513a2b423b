"""Describe the platform a run happened on: OS, architecture, Python, libc, package versions."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

from lab.evidence import PlatformInfo

# Packages whose versions matter to a fork-safety report.
INTERESTING = (
    "chromadb", "pygdbmi", "celery", "billiard", "kombu", "torch", "numpy", "onnxruntime",
    "tokenizers", "grpcio", "polars", "kuzu",
)


def package_versions(names=INTERESTING) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def platform_info() -> PlatformInfo:
    libc_name, libc_version = platform.libc_ver()
    return PlatformInfo(
        system=platform.system(),
        machine=platform.machine(),
        python=platform.python_version(),
        libc=f"{libc_name} {libc_version}".strip() or "unknown",
        packages={"lab": _lab_version(), **package_versions()},
        backend=_backend(),
    )


TARGET_QUERY_TIMEOUT_S = 10.0  # the program's interpreter asked for its version and packages
_QUERY = ("import json, sys\nfrom importlib import metadata\nfound = {}\n"
          "for name in json.loads(sys.argv[1]):\n"
          "    try:\n        found[name] = metadata.version(name)\n"
          "    except Exception:\n        pass\n"
          "print(json.dumps({'executable': sys.executable, 'prefix': sys.prefix, "
          "'python': '%d.%d.%d' % sys.version_info[:3], 'packages': found}))\n")


def target_interpreter(argv0: str, env: dict[str, str], cwd: str | None) -> dict | None:
    """``{"executable", "prefix", "python", "packages"}`` of the interpreter a program ran in, asked
    by running it (``argv0``, found on the program's PATH: a pyenv shim leads to the real
    interpreter) once more with the program's environment; None when it cannot be asked."""
    found = shutil.which(argv0, path=env.get("PATH")) if os.sep not in argv0 else argv0
    if found is None:
        return None
    try:
        done = subprocess.run([found, "-c", _QUERY, json.dumps(INTERESTING)], env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TARGET_QUERY_TIMEOUT_S)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("packages"), dict):
        return None
    return answer


def use_target_interpreter(info: PlatformInfo, answer: dict) -> None:
    """Describe the program's interpreter in ``info``, the lab's own packages kept aside."""
    if answer.get("prefix") == sys.prefix:  # a venv's python links to its base: not the test
        info.interpreter = sys.executable
        return  # the lab's own interpreter and environment: the packages are the program's
    info.lab_packages = dict(info.packages)
    info.interpreter = str(answer.get("executable"))
    info.python = str(answer.get("python") or info.python)
    info.packages = {str(k): str(v) for k, v in answer["packages"].items()}


def platform_key(info: PlatformInfo | None = None) -> str:
    """e.g. ``linux-x86_64-py3.11``: the name of a results file for this platform. A Linux
    run on the portable backend is ``linux-x86_64-py3.11-portable``: it never overwrites the
    Linux backend's results."""
    info = info or platform_info()
    major_minor = ".".join(info.python.split(".")[:2])
    system = info.system.lower()
    portable = "-portable" if system == "linux" and info.backend == "portable" else ""
    return f"{system}-{info.machine}-py{major_minor}{portable}"


def _backend() -> str | None:
    from lab import process
    from lab.errors import BadInput

    try:
        return process.backend_name()
    except BadInput:
        return None


def _lab_version() -> str:
    from lab import __version__

    return __version__


def python_executable() -> str:
    return sys.executable
