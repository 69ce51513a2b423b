"""Python stacks of a deadlocked ChromaDB child: py-spy against GDB's py-bt, and `lab inspect`."""

# The child is the chromadb-tokio one, held by ``lab.bench.hung hold`` (as for the cost of
# evidence). Each tool reads every thread's Python stack, several times in turn; before each
# read the bench waits until the child is untraced and asleep again. Then ``lab inspect`` (in
# this process, so without an interpreter's start) on the held tree: the verdict with Python
# stacks and no debugger, then with the full GDB capture. Goals from issue 16: verdict and
# Python stacks within 1 s, the full native capture within 2 s.

from __future__ import annotations

import shutil
import subprocess
import time

from lab.bench.context import BenchContext, BenchFailed
from lab.bench.evidence_cost import HOLD_TIMEOUT_S, SCENARIO, TOOL_TIMEOUT_S, _wait_untraced
from lab.bench.hung import blocked_forever
from lab.bench.probe import Probe
from lab.bench.stats import summary
from lab.debuggers.pyext import find_python_gdb_extension
from lab.errors import Interrupted, LabError
from lab.linux import procfs
from lab.progress import Progress
from lab.stacks import pyspy

GOAL_VERDICT_AND_STACKS_S = 1.0
GOAL_FULL_CAPTURE_S = 2.0
RELEASE_TIMEOUT_S = 10.0


def measure(ctx: BenchContext) -> dict:
    """Return {scenario, child, rounds, tools: [{tool, seconds, python_frames, pauses}],
    inspect: {...}, still_deadlocked}."""
    rounds = ctx.pick(10, 3)
    ctx.say(f"python stacks: holding a deadlocked {SCENARIO} child ({rounds} rounds per tool)")
    try:
        with Probe("lab.bench.hung", [SCENARIO, "hold"], ctx.log("stacks-hold"),
                   stdin_pipe=True, env=ctx.env()) as probe:
            held = probe.read(HOLD_TIMEOUT_S)
            pid = held["pid"]
            if held["blocked_ns"] is None:
                raise BenchFailed(f"the {SCENARIO} child {pid} never blocked")
            tools = [_repeat(ctx, name, tool, pid, rounds) for name, tool in _tools(pid)]
            # the hold program is the child's parent: inspected as a user would, from the top
            inspected = {mode: _inspect(ctx, probe.proc.pid, mode, rounds)
                         for mode in ("none", "gdb")}
            _wait_untraced(pid)
            still = bool(blocked_forever(pid))
            probe.release(RELEASE_TIMEOUT_S)
    except Interrupted:
        raise
    except (LabError, procfs.Gone) as exc:
        line = exc.line() if isinstance(exc, LabError) else f"the held child vanished: {exc}"
        ctx.say(f"python stacks: skipped: {line}")
        return {"scenario": SCENARIO, "error": line, "tools": []}
    return {"scenario": SCENARIO, "child": pid, "rounds": rounds, "tools": tools,
            "inspect": inspected, "still_deadlocked": still,
            "goals": {"verdict_and_stacks_s": GOAL_VERDICT_AND_STACKS_S,
                      "full_capture_s": GOAL_FULL_CAPTURE_S}}


def _tools(pid: int):
    yield "py-spy dump --nonblocking (no pause)", lambda: _py_spy(pid, blocking=False)
    yield "py-spy dump (threads stopped)", lambda: _py_spy(pid, blocking=True)
    yield "py-spy dump --native (threads stopped)", lambda: _py_spy(pid, native=True)
    yield "gdb -batch: attach, py-bt of every thread, detach", lambda: _py_bt(pid)


def _repeat(ctx: BenchContext, name: str, tool, pid: int, rounds: int) -> dict:
    ctx.say(f"python stacks: {name} on PID {pid}")
    seconds, frames, error = [], None, None
    for _ in range(rounds):
        _wait_untraced(pid)
        began = time.monotonic()
        got = tool()
        if "error" in got or "skipped" in got:
            error = got.get("error") or got.get("skipped")
            break
        seconds.append(time.monotonic() - began)
        frames = got["python_frames"]
    record = {"tool": name, "seconds": summary(seconds), "python_frames": frames}
    if error:
        record["error" if seconds or "error" in got else "skipped"] = error
    ctx.say(f"python stacks: {name}: " + (error or f"median {record['seconds']['median']:.3f} s"
                                          f", {frames} Python frames"))
    return record


def _py_spy(pid: int, blocking: bool = False, native: bool = False) -> dict:
    record = pyspy.dump(pid, blocking=blocking, native=native, timeout=TOOL_TIMEOUT_S)
    if record["error"]:
        return {"error": record["error"]}
    return {"python_frames": sum(len(t["python_frames"]) for t in record["threads"])}


def _py_bt(pid: int) -> dict:
    extension = find_python_gdb_extension(pid)
    if shutil.which("gdb") is None:
        return {"skipped": "gdb is not installed"}
    if extension is None:
        return {"skipped": "no CPython gdb extension (pythonX.Y-gdb.py) for this interpreter: "
                           "GDB reads no Python frame"}
    argv = ["gdb", "-nx", "-batch", "-p", str(pid), "-ex", f"source {extension}",
            "-ex", "thread apply all py-bt"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
                          stdin=subprocess.DEVNULL, check=False)
    from lab.parsers.pybt import parse_py_bt

    if done.returncode != 0:
        return {"error": done.stderr.strip()[-300:] or f"gdb exited {done.returncode}"}
    return {"python_frames": len(parse_py_bt(done.stdout))}


def _inspect(ctx: BenchContext, pid: int, debugger: str, rounds: int) -> dict:
    """`lab inspect PID --debugger DEBUGGER`, in this process, ``rounds`` times."""
    from lab.inspector.run import inspect
    from lab.options import InspectOptions

    ctx.say(f"python stacks: lab inspect --debugger {debugger} on PID {pid}")
    verdicts, stacks, totals, pauses, outcome = [], [], [], [], None
    for _ in range(rounds):
        try:
            evidence = inspect(InspectOptions(pid=pid, debugger=debugger,
                                              out_base=ctx.scratch / "inspect"),
                               Progress(enabled=False))
        except Interrupted:
            raise
        except LabError as exc:
            return {"error": exc.line()}
        timings = evidence.timings
        outcome = evidence.verdict
        verdicts.append(timings["verdict_s"])
        stacks.append(timings["verdict_s"] + timings.get("python_stacks_s", 0.0))
        totals.append(timings["total_s"])
        pauses.extend(p["seconds"] for p in evidence.inspect["pauses"])
    return {"verdict": outcome, "verdict_s": summary(verdicts),
            "verdict_and_stacks_s": summary(stacks), "total_s": summary(totals),
            "pause_s": summary(pauses)}
