"""Find CPython's gdb extension (pythonX.Y-gdb.py, which gives ``py-bt``) for a running process."""

from __future__ import annotations

import os
import re
from pathlib import Path

from lab import process
from lab.backend import Gone

# Where distributions install the extension besides the interpreter's own bin directory:
# Debian/Ubuntu auto-load it from the data directory, Fedora ships it with the debuginfo.
AUTO_LOAD_DIRS = (Path("/usr/share/gdb/auto-load"), Path("/usr/local/share/gdb/auto-load"))
DEBUG_DIR = Path("/usr/lib/debug")

_VERSION = re.compile(r"python(\d+\.\d+t?)")
_LIBPYTHON = re.compile(r"(/\S*/libpython\d+\.\d+t?[^/\s]*\.so[^/\s]*)$")


def libpython_from_maps(maps: str) -> str | None:
    """The path of the first ``libpythonX.Y*.so*`` in a /proc/PID/maps text (or a list of
    mapped paths, one a line)."""
    for line in maps.splitlines():
        match = _LIBPYTHON.search(line.strip())
        if match:
            return match.group(1).removesuffix(" (deleted)")
    return None


def python_version(*names: str | None) -> str | None:
    """``"3.11"`` from the first of ``libpython3.11.so.1.0``, ``python3.11`` that has one."""
    for name in names:
        if name:
            match = _VERSION.search(os.path.basename(name))
            if match:
                return match.group(1)
    return None


def extension_candidates(exe: str | None, libpython: str | None) -> list[Path]:
    """Paths where the extension may be, most specific first (pure: nothing is read).

    ``exe`` and ``libpython`` should already be resolved (a venv's python is a symlink to the
    real interpreter, whose directory holds the extension).
    """
    version = python_version(libpython, exe)
    candidates: list[Path] = []
    if exe and version:
        candidates.append(Path(exe).parent / f"python{version}-gdb.py")
    if libpython and version:
        prefix = Path(libpython).parent.parent
        candidates.append(prefix / "bin" / f"python{version}-gdb.py")
    for binary in (exe, libpython):
        if not binary or not python_version(binary):
            continue
        candidates.append(Path(f"{binary}-gdb.py"))
        relative = binary.lstrip("/")
        for base in AUTO_LOAD_DIRS:
            candidates.append(base / f"{relative}-gdb.py")
        candidates.append(DEBUG_DIR / f"{relative}-gdb.py")
        candidates.append(DEBUG_DIR / f"{relative}.debug-gdb.py")
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def _debug_dir_globs(exe: str | None, libpython: str | None) -> list[Path]:
    """Fedora names it after the debuginfo file: ``libpython3.11.so.1.0-3.11.7-...-gdb.py``."""
    found: list[Path] = []
    for binary in (libpython, exe):
        if not binary or not python_version(binary):
            continue
        folder = DEBUG_DIR / os.path.dirname(binary).lstrip("/")
        if folder.is_dir():
            found.extend(sorted(folder.glob(f"{os.path.basename(binary)}*-gdb.py")))
    return found


def find_python_gdb_extension(pid: int) -> Path | None:
    """Return the extension file matching the interpreter of ``pid``, or None.

    None when the process is not Python, is gone, or no installed file matches.
    """
    source = process.reader()
    exe = source.executable(pid)
    try:
        libpython = libpython_from_maps("\n".join(source.mapped(pid)))
    except (Gone, OSError):
        libpython = None
    if libpython:
        libpython = os.path.realpath(libpython)
    for path in [*extension_candidates(exe, libpython), *_debug_dir_globs(exe, libpython)]:
        if path.is_file() and os.access(path, os.R_OK):
            return path
    return None
