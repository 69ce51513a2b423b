"""Describe the platform a run happened on: OS, architecture, Python, libc, package versions."""

from __future__ import annotations

import platform
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
