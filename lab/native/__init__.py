"""Build (once, cached by source hash) and load the lab's small C helper library.

``load()`` returns a ``ctypes.CDLL`` exposing the functions of ``held_mutex.c``:

- ``lab_hold_mutex_in_native_thread(ready_fd) -> int``: a new pthread locks the static mutex,
  writes one byte to ``ready_fd`` and blocks in read(2); returns 0 or an errno value.
- ``lab_lock_mutex() -> int``: pthread_mutex_lock on that mutex (forever, after a fork).
- ``lab_release_mutex() -> int``: wake the holder, let it unlock, join it; 0 or an errno value.
- ``lab_mutex_owner_tid() -> int``: the owner TID glibc stores in the mutex (0: unlocked).

ctypes.CDLL releases the GIL for the duration of every call, so a thread blocked in the
library is blocked in the kernel, not on the GIL.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from lab.errors import LabError

SOURCE = Path(__file__).resolve().with_name("held_mutex.c")
CFLAGS = ("-shared", "-fPIC", "-O1", "-pthread")
COMPILERS = ("cc", "gcc", "clang")
# Compiling one short file takes well under a second; this only catches a wedged compiler.
BUILD_TIMEOUT = 120.0
INSTALL_HINT = "install a C compiler: apt-get install gcc"


class NativeBuildError(LabError):
    """No C compiler, or the compiler failed: ``str(error)`` says which and what to do."""


def cache_dirs() -> list[Path]:
    """Return where built libraries may live, best first: XDG cache, ~/.cache, a temp dir."""
    dirs = []
    if os.environ.get("XDG_CACHE_HOME"):
        dirs.append(Path(os.environ["XDG_CACHE_HOME"]) / "lab-native")
    try:
        dirs.append(Path.home() / ".cache" / "lab-native")
    except RuntimeError:  # no $HOME and no passwd entry
        pass
    dirs.append(Path(tempfile.gettempdir()) / f"lab-native-{os.getuid()}")
    return dirs


def compiler() -> list[str]:
    """Return the compiler command ($CC, else cc, gcc or clang); raise NativeBuildError."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in COMPILERS:
        path = shutil.which(name)
        if path:
            return [path]
    tried = ", ".join(COMPILERS)
    raise NativeBuildError(f"no C compiler found (tried $CC, {tried}): {INSTALL_HINT}")


def library_name() -> str:
    """Return the file name of the built library: source, flags and machine in one hash."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join((*CFLAGS, platform.machine())).encode())
    return f"{SOURCE.stem}-{digest.hexdigest()[:16]}.so"


def build() -> Path:
    """Return the path of the built library, compiling it on first use.

    The first cache directory that holds it, or that can be written, wins. The library is
    compiled to a temporary name and renamed into place (rename(2) is atomic), so concurrent
    builds never expose a half-written file. Raises NativeBuildError.
    """
    name = library_name()
    errors = []
    for directory in cache_dirs():
        target = directory / name
        if target.is_file() and _trusted(directory):
            return target
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _trusted(directory):
                errors.append(f"{directory}: not owned by us or writable by others")
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        except OSError as error:
            errors.append(f"{directory}: {error.strerror or error}")
            continue
        os.close(fd)
        try:
            _compile(Path(tmp))
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target
    raise NativeBuildError(f"no writable cache directory for {name}: {'; '.join(errors)}")


@functools.cache
def load() -> ctypes.CDLL:
    """Return the loaded library (built on first use, then cached); raise NativeBuildError."""
    lib = ctypes.CDLL(str(build()))
    for function in ("lab_hold_mutex_in_native_thread", "lab_lock_mutex", "lab_release_mutex",
                     "lab_mutex_owner_tid"):
        getattr(lib, function).restype = ctypes.c_int
    lib.lab_hold_mutex_in_native_thread.argtypes = [ctypes.c_int]
    for function in ("lab_lock_mutex", "lab_release_mutex", "lab_mutex_owner_tid"):
        getattr(lib, function).argtypes = []
    return lib


def _compile(output: Path) -> None:
    command = [*compiler(), *CFLAGS, "-o", str(output), str(SOURCE)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except FileNotFoundError:
        raise NativeBuildError(f"C compiler {command[0]!r} not found: {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise NativeBuildError(f"{command[0]} did not finish within {BUILD_TIMEOUT:g} s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise NativeBuildError(f"{shlex.join(command)} failed: {' | '.join(detail)}")


def _trusted(directory: Path) -> bool:
    """A directory we may load code from: ours, and not writable by group or others."""
    info = directory.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o022
