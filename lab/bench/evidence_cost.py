"""Cost of evidence: each debugger or tracer, one after another, on the same deadlocked child.

The child is the chromadb-tokio one, held by ``lab.bench.hung hold``. Before each tool the
bench waits until the child is untraced and asleep again, and at the end checks that it is
still deadlocked: no tool may have changed what the next one sees.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from lab import debuggers
from lab.bench.context import BenchContext, BenchFailed
from lab.bench.hung import blocked_forever
from lab.bench.probe import Probe
from lab.errors import Interrupted, LabError
from lab.linux import procfs
from lab.process import exits

SCENARIO = "chromadb-tokio"
HOLD_TIMEOUT_S = 120.0  # the hold program: imports, prepare, fork, block
TOOL_TIMEOUT_S = 120.0  # one tool on one process (gdb reads the symbols of every library)
UNTRACED_TIMEOUT_S = 10.0  # the child leaving ptrace-stop after a tool detached
STATE_POLL_S = 0.005  # polling a /proc state under a deadline
STRACE_OUTPUT_TIMEOUT_S = 10.0
# gcore writes every mapping, reservations included (as zeros): the virtual size bounds the
# core. Skip it for a child larger than this, or without room for twice that on the disk.
GCORE_MAX_BYTES = 4 << 30
GCORE_ROOM_FACTOR = 2

GDB_BATCH = ["gdb", "-nx", "-batch", "-p", "{pid}", "-ex", "thread apply all bt"]
LLDB_BATCH = ["lldb", "--batch", "--no-lldbinit", "-p", "{pid}", "-o", "thread backtrace all",
              "-o", "detach"]


def measure(ctx: BenchContext) -> dict:
    """Return {scenario, child: {pid, threads, rss_bytes, ...}, tools: [...], still_deadlocked}."""
    ctx.say(f"cost of evidence: holding a deadlocked {SCENARIO} child")
    tools, hold_log = [], ""
    try:
        with Probe("lab.bench.hung", [SCENARIO, "hold"], ctx.log("hold"), stdin_pipe=True,
                   env=ctx.env()) as probe:
            held = probe.read(HOLD_TIMEOUT_S)
            pid = held["pid"]
            if held["blocked_ns"] is None:
                raise BenchFailed(f"the {SCENARIO} child {pid} never blocked: nothing to "
                                  "capture")
            child = _describe(pid)
            try:
                for name, tool in _tools(ctx):
                    _wait_untraced(pid)
                    tools.append(_timed(ctx, name, tool, pid))
                _wait_untraced(pid)
            except BenchFailed:
                hold_log = probe.tail()  # what the held child printed says how it ended
                raise
            still = bool(blocked_forever(pid))
            probe.release(UNTRACED_TIMEOUT_S)
    except Interrupted:
        raise  # SIGINT/SIGTERM ends the bench; anything else skips one measurement
    except (LabError, procfs.Gone) as exc:
        line = exc.line() if isinstance(exc, LabError) else f"the held child vanished: {exc}"
        ctx.say(f"cost of evidence: skipped: {line}{hold_log}")
        # the tools measured before the failure say which one the child did not survive
        return {"scenario": SCENARIO, "error": line + hold_log, "tools": tools}
    return {"scenario": SCENARIO, "child": child, "tools": tools, "still_deadlocked": still}


def _tools(ctx: BenchContext):
    yield "gdb (lab driver, pygdbmi: all threads + py-bt)", _gdb_driver
    yield "gdb batch (thread apply all bt)", _gdb_batch
    if "lldb" in debuggers.names():
        yield "lldb (lab driver)", _lldb_driver
    yield "lldb batch (thread backtrace all)", _lldb_batch
    yield "strace snapshot (attach, first line, detach)", _strace
    if ctx.quick:
        yield "gcore", lambda _ctx, _pid: _skip("skipped in --quick (writes the whole memory)")
    else:
        yield "gcore", _gcore


def _timed(ctx: BenchContext, name: str, tool, pid: int) -> dict:
    ctx.say(f"cost of evidence: {name} on PID {pid}")
    started = time.monotonic()
    try:
        record = tool(ctx, pid)
    except Interrupted:
        raise  # SIGINT/SIGTERM ends the bench; anything else skips one measurement
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        record = {"error": f"{type(exc).__name__}: {exc}"}
    record = {"tool": name, "seconds": round(time.monotonic() - started, 4), **record}
    if record.get("skipped"):
        record["seconds"] = None
    ctx.say(f"cost of evidence: {name}: " + (
        record.get("skipped") or record.get("error") or
        f"{record['seconds']:.3f} s, {record.get('bytes', 0)} bytes"))
    return record


def _skip(reason: str) -> dict:
    return {"skipped": reason}


def _gdb_driver(ctx: BenchContext, pid: int) -> dict:
    return _driver(ctx, "gdb", pid)


def _lldb_driver(ctx: BenchContext, pid: int) -> dict:
    return _driver(ctx, "lldb", pid)


def _driver(ctx: BenchContext, name: str, pid: int) -> dict:
    out = ctx.scratch / f"{name}-driver"
    out.mkdir(exist_ok=True)
    info = debuggers.get(name).capture(pid, out)
    transcript = out / (info.transcript or f"{name}.txt")
    return {"bytes": transcript.stat().st_size if transcript.exists() else 0,
            "threads": len(info.threads),
            "native_frames": sum(len(t.frames) for t in info.threads),
            "python_frames": sum(len(t.python_frames) for t in info.threads)}


def _gdb_batch(_ctx: BenchContext, pid: int) -> dict:
    return _batch(GDB_BATCH, pid, frame_prefix="#")


def _lldb_batch(_ctx: BenchContext, pid: int) -> dict:
    return _batch(LLDB_BATCH, pid, frame_prefix="frame #")


def _batch(template: list[str], pid: int, frame_prefix: str) -> dict:
    argv = [part.format(pid=pid) for part in template]
    if shutil.which(argv[0]) is None:
        return _skip(f"{argv[0]} is not installed")
    done = subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)
    lines = done.stdout.decode(errors="replace").splitlines()
    record = {"bytes": len(done.stdout), "exit_code": done.returncode,
              "native_frames": sum(line.lstrip().startswith(frame_prefix) for line in lines),
              "command": " ".join(argv)}
    if done.returncode != 0:
        record["error"] = done.stderr.decode(errors="replace").strip()[-300:]
    return record


def _strace(ctx: BenchContext, pid: int) -> dict:
    if shutil.which("strace") is None:
        return _skip("strace is not installed")
    path = ctx.scratch / "strace.txt"
    argv = ["strace", "-p", str(pid), "-tt", "-o", str(path)]
    tracer = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        # A deadlocked child makes no syscall: the snapshot is the one it sleeps in, which
        # strace prints as soon as it has attached. Wait for that line, then detach.
        deadline = time.monotonic() + STRACE_OUTPUT_TIMEOUT_S
        while not (path.exists() and path.stat().st_size) and tracer.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(argv, STRACE_OUTPUT_TIMEOUT_S)
            time.sleep(STATE_POLL_S)
        tracer.send_signal(signal.SIGINT)
        _, err = tracer.communicate(timeout=TOOL_TIMEOUT_S)
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait(timeout=TOOL_TIMEOUT_S)
    text = path.read_text(errors="replace") if path.exists() else ""
    return {"bytes": len(text.encode()), "lines": len(text.splitlines()),
            "first_line": text.splitlines()[0][:120] if text else None,
            "command": " ".join(argv[:5]), "exit_code": tracer.returncode}


def _gcore(ctx: BenchContext, pid: int) -> dict:
    if shutil.which("gcore") is None:
        return _skip("gcore (it comes with gdb) is not installed")
    size = _kib(procfs.status(pid).get("VmSize"))
    free = shutil.disk_usage(ctx.scratch).free
    if size > GCORE_MAX_BYTES:
        return _skip(f"child too big: the core could reach its virtual size, {size} bytes "
                     f"(limit {GCORE_MAX_BYTES})")
    if free < GCORE_ROOM_FACTOR * size:
        return _skip(f"not enough room for a core: {free} bytes free, VmSize {size} bytes")
    prefix = ctx.scratch / "core"
    done = subprocess.run(["gcore", "-o", str(prefix), str(pid)], capture_output=True,
                          timeout=TOOL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    core = Path(f"{prefix}.{pid}")
    if not core.exists():
        return {"error": f"gcore exited with {done.returncode} and wrote no core: "
                         f"{done.stderr.decode(errors='replace').strip()[-300:]}"}
    stat = core.stat()
    core.unlink()
    return {"bytes": stat.st_size, "disk_bytes": stat.st_blocks * 512,
            "exit_code": done.returncode, "command": f"gcore -o PREFIX {pid}"}


def _describe(pid: int) -> dict:
    status = procfs.status(pid)
    return {"pid": pid, "threads": len(procfs.tids(pid)),
            "rss_bytes": _kib(status.get("VmRSS")), "vm_bytes": _kib(status.get("VmSize"))}


def _kib(text: str | None) -> int:
    return int(text.split()[0]) * 1024 if text else 0


def _wait_untraced(pid: int) -> None:
    """Wait until ``pid`` has no tracer and sleeps again (a tool's detach takes a moment).

    Raises BenchFailed at once for a child that ended: it will never sleep again.
    """
    deadline = time.monotonic() + UNTRACED_TIMEOUT_S
    while True:
        try:
            traced = procfs.tracer_pid(pid) != 0
            found = procfs.stat(pid)
        except procfs.Gone:
            raise BenchFailed(f"the held child {pid} vanished during the evidence bench") from None
        state = found.state
        if state in "ZX":
            ending = ("how, the kernel does not say" if found.exit_code is None
                      else exits.from_wait_status(found.exit_code).detail)
            raise BenchFailed(f"the held child {pid} ended during the evidence bench: "
                              f"{ending} (its parent: PID {found.ppid})")
        if not traced and state == "S":
            return
        if time.monotonic() > deadline:
            raise BenchFailed(f"the held child {pid} is still traced or stopped (state {state}) "
                           f"{UNTRACED_TIMEOUT_S:g} s after a tool detached")
        time.sleep(STATE_POLL_S)
