"""Run every measurement family and write the results JSON, the Markdown and the PNG atomically.

Full run: ``results/bench-<platform>.json``, ``docs/BENCH.md``, ``docs/bench.png``. A quick run
writes ``results/bench-<platform>-quick.json``, ``results/BENCH-quick.md`` and
``results/bench-quick.png`` instead, so that a smoke check never overwrites the figures a full
run left in ``docs/``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lab import redact
from lab.bench import evidence_cost, fixes, guard, report, scaling, stacks, verdict
from lab.bench.context import BenchContext
from lab.envinfo import platform_info, platform_key
from lab.errors import Interrupted, LabError, OutputNotWritable
from lab.evidence import write_atomic
from lab.progress import Progress
from lab.scenarios import MissingPackage

SCHEMA = "lab-bench/1"
FAMILIES = (
    ("time_to_verdict", verdict.measure),
    ("evidence_cost", evidence_cost.measure),
    ("fix_cost", fixes.measure),
    ("scaling", scaling.measure),
    ("python_stacks", stacks.measure),
    ("fork_guard", guard.measure),
)


@dataclass
class BenchPaths:
    json: Path
    markdown: Path
    image: Path


def paths_for(quick: bool, results_dir: Path, docs_dir: Path, key: str) -> BenchPaths:
    if quick:
        return BenchPaths(results_dir / f"bench-{key}-quick.json",
                          results_dir / "BENCH-quick.md", results_dir / "bench-quick.png")
    return BenchPaths(results_dir / f"bench-{key}.json", docs_dir / "BENCH.md",
                      docs_dir / "bench.png")


def run_bench(quick: bool, results_dir: Path, docs_dir: Path,
              progress: Progress | None = None) -> BenchPaths:
    """Measure everything; write the three files; return their paths.

    Raises MissingPackage (no matplotlib: checked before anything runs), OutputNotWritable,
    or the LabError that stopped a measurement outright (SIGINT included); every process the
    bench started is reaped either way.
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingPackage("the bench draws its plot with matplotlib, not installed here",
                             "pip install matplotlib")
    progress = progress or Progress()
    info = platform_info()
    paths = paths_for(quick, Path(results_dir), Path(docs_dir), platform_key(info))
    for folder in {paths.json.parent, paths.markdown.parent, paths.image.parent}:
        _writable(folder)
    began_wall, began = time.strftime("%Y-%m-%d %H:%M:%S %z"), time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="lab-bench-"))
    ctx = BenchContext(quick=quick, scratch=scratch, progress=progress)
    results = {
        "schema": SCHEMA,
        "command": "python -m lab bench" + (" --quick" if quick else ""),
        "quick": quick,
        "started": began_wall,
        "platform": {**asdict(info), "key": platform_key(info)},
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "load_before": [round(x, 2) for x in os.getloadavg()]},
    }
    ctx.say(f"{'quick' if quick else 'full'} bench on {results['platform']['key']}, "
            f"{results['machine']['cpus']} CPUs; scratch {scratch}")
    try:
        for key, measure in FAMILIES:
            try:
                results[key] = measure(ctx)
            except Interrupted:
                raise
            except LabError as exc:  # one family failed outright: the others still count
                ctx.say(f"{key}: failed: {exc.line()}")
                results[key] = {"error": exc.line()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    results["seconds"] = round(time.monotonic() - began, 1)
    results["notes"] = _notes(results)
    _write(results, paths)
    for path in (paths.json, paths.markdown, paths.image):
        ctx.say(f"wrote {path}")
    return paths


def _write(results: dict, paths: BenchPaths) -> None:
    import json

    write_atomic(paths.json, redact.text(json.dumps(results, indent=2) + "\n"))
    tmp = paths.image.with_name(f".{paths.image.name}.tmp.png")
    try:
        report.plot(results, tmp)
        os.replace(tmp, paths.image)
    finally:
        if tmp.exists():
            tmp.unlink()
    image = os.path.relpath(paths.image, paths.markdown.parent)
    write_atomic(paths.markdown, redact.text(report.markdown(results, image)))


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".bench-write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritable(f"cannot write bench results under {folder}: "
                                f"{exc.strerror}", "pass --results/--docs with a directory "
                                "you can write to") from exc


def _notes(results: dict) -> list[str]:
    """Facts about this run a reader needs to judge the numbers (all derived from the run)."""
    notes = []
    load = results["machine"]
    notes.append(f"Load average (1, 5, 15 min) before: {load['load_before']}, after: "
                 f"{load['load_after']} on {load['cpus']} CPUs: other work on the machine "
                 "shows up as spread between min and max.")
    tools = [t["tool"] for t in results["evidence_cost"].get("tools", [])]
    if "error" in results["evidence_cost"]:
        tools = ["lldb (lab driver)"]  # nothing was measured: no note about LLDB
    if not any("lldb (lab driver)" in t for t in tools):
        notes.append("LLDB was measured as `lldb --batch --no-lldbinit -p PID -o 'thread "
                     "backtrace all' -o detach` directly: the lab's LLDB driver "
                     "(lab/debuggers/lldb.py) was not registered when this ran.")
    modes = {row["watch_mode"] for row in results["scaling"].get("children", [])}
    if "polling" in modes:
        notes.append("The watcher ran in polling mode (no process connector): detection "
                     "times include up to one poll interval more.")
    notes.append("Time to verdict is measured with `--debugger none`: the verdict alone. A "
                 "debugger capture adds the *cost of evidence* (section 2) after it.")
    notes.append("The floor and the watchdog run the same scenario code (`lab.bench.hung`) "
                 "outside the lab, in separate runs interleaved with the lab's.")
    return notes
