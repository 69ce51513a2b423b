"""Optional core dump of a hung process with gdb's ``gcore``, never one that fills the disk.

Some Rust libraries reserve terabytes of address space up front: what matters is the size
gcore could write, bounded (the process backend: /proc/PID/smaps) before anything is
written, and refused above a limit or without room on the disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from lab import process
from lab.backend import Gone

GCORE_LIMIT_MB = 1024  # default --gcore-limit: the largest estimated core the lab writes
DISK_HEADROOM_MB = 256  # free space left on the evidence disk after the core, at least
GCORE_TIMEOUT_S = 120.0  # attach, read every dumped page, write, detach
CORE_NAME = "core"


def estimate_bytes(pid: int) -> int | None:
    """The bytes gcore writes, from the process backend (None where it cannot tell): every
    mapping not marked VM_DONTDUMP, PROT_NONE reservations included (measured with GDB 13: a
    glibc thread arena's 64 MiB reserve is written in full, as zeros, not as a sparse hole),
    so a process's virtual size is what counts. Raises Gone, PermissionError."""
    return process.reader().dumpable_bytes(pid)


def dump(pid: int, out_dir: Path, limit_mb: float = GCORE_LIMIT_MB) -> dict[str, Any]:
    """Write ``out_dir/core.PID`` with gcore when small enough; return what happened.

    The result always says why when no core was written (``skipped``) or what failed
    (``error``); it never raises for the target or the disk.
    """
    result: dict[str, Any] = {"limit_mb": limit_mb}
    gcore = shutil.which("gcore")
    if gcore is None:
        return {**result, "skipped": "gcore is not installed (it comes with gdb)"}
    try:
        estimate = estimate_bytes(pid)
    except Gone:
        return {**result, "skipped": f"process {pid} has exited"}
    except PermissionError:
        return {**result, "skipped": f"cannot read process {pid}'s mappings (ptrace "
                                     "permission)"}
    if estimate is None:
        return {**result, "skipped": "this process backend cannot estimate a core's size: no "
                                     "core is written unbounded"}
    result["estimated_bytes"] = estimate
    if estimate > limit_mb * 2**20:
        return {**result, "skipped": f"the core would be ~{estimate / 2**20:,.0f} MiB, above "
                                     f"--gcore-limit {limit_mb:g} MiB"}
    free = shutil.disk_usage(out_dir).free
    if estimate + DISK_HEADROOM_MB * 2**20 > free:
        return {**result, "skipped": f"only {free / 2**20:,.0f} MiB free on the evidence disk "
                                     f"for a ~{estimate / 2**20:,.0f} MiB core"}
    prefix = Path(out_dir) / CORE_NAME
    path = Path(f"{prefix}.{pid}")
    # The core is the whole memory, every secret in it: made 0600 before gcore writes it (a
    # truncating open keeps the mode of the file that is there).
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    started = time.monotonic()
    try:
        done = subprocess.run([gcore, "-o", str(prefix), str(pid)], capture_output=True,
                              text=True, timeout=GCORE_TIMEOUT_S, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired:
        return {**result, "error": f"gcore did not finish within {GCORE_TIMEOUT_S:g} s"}
    result["seconds"] = round(time.monotonic() - started, 3)
    if not path.exists() or not path.stat().st_size:
        path.unlink(missing_ok=True)
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**result, "error": f"gcore exited {done.returncode} and wrote no core: {said}"}
    # A core is sparse where memory was never touched: report both sizes.
    info = path.stat()
    result.update(file=path.name, bytes=info.st_size, disk_bytes=info.st_blocks * 512)
    return result
