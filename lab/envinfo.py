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
    )


def platform_key(info: PlatformInfo | None = None) -> str:
    """e.g. ``linux-x86_64-py3.11``: the name of a results file for this platform."""
    info = info or platform_info()
    major_minor = ".".join(info.python.split(".")[:2])
    return f"{info.system.lower()}-{info.machine}-py{major_minor}"


def _lab_version() -> str:
    from lab import __version__

    return __version__


def python_executable() -> str:
    return sys.executable
