"""``lab report RUN_DIR``: a bug report (report.md) a maintainer can read without the lab.

report.md is composed of the section generators of ``lab.render`` that summary.md uses too, and
of its own (environment, fix, reproduction, files); values are escaped by ``lab.markdown``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab import fixes, markdown as md, redact, render, untrusted
from lab.errors import BadInput
from lab.evidence import DebugThread, Evidence, ProcessRecord, from_dict, write_atomic

MAX_EVIDENCE_BYTES = 256 << 20  # an evidence.json larger than this is not the lab's
TOP_NATIVE = 12
TOP_PYTHON = 12
# Environment variables that change how a fork behaves or what the lab saw; the rest of the
# environment stays in evidence.json (masked there too).
RELEVANT_ENV = ("PYTHON", "LAB_", "CHROMA", "CELERY", "TOKIO", "RUST_", "RAYON", "OMP_",
                "MKL_", "OPENBLAS", "TOKENIZERS", "GRPC", "LD_PRELOAD", "MALLOC")
EXPLAIN = {
    "deadlock": "`fork()` copies the whole address space but only the calling thread. A lock "
                "that another thread of the parent held at that instant is copied *locked*, "
                "and the thread that would release it does not exist in the child, so the "
                "child's first attempt to take it sleeps forever in a private futex wait. On "
                "Linux this is a silent hang; on macOS libdispatch detects the inherited state "
                "and traps (SIGTRAP) instead.",
    "crash": "The process was killed by a signal it did not handle; the stack below shows "
             "where.",
    "hang": "The process did not finish in time, but the lab could not prove a deadlock (it "
            "was spinning, or in a wait that could still end).",
    "data-loss": "The child exited normally, but a write it made is not there afterwards.",
}


def load_run(run_dir: Path) -> Evidence:
    """The evidence of the run in ``run_dir``; raises BadInput when there is none."""
    run_dir = Path(run_dir)
    path = run_dir / "evidence.json"
    if not run_dir.is_dir():
        raise BadInput(f"no such run directory: {run_dir}")
    if not path.exists() and not path.is_symlink():
        raise BadInput(f"no evidence.json in {run_dir}: not a run directory of the lab")
    read = untrusted.read_regular(path, MAX_EVIDENCE_BYTES, "an evidence document")
    if read.cut:
        raise BadInput(f"{path} is {read.size:,} bytes, more than an evidence document the lab "
                       f"reads ({MAX_EVIDENCE_BYTES >> 20} MiB)")
    document = untrusted.loads(read.data.decode("utf-8", "replace"), str(path))
    try:
        return from_dict(document)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(f"{path} is not an evidence document: {exc}") from None


_platform_id = fixes.platform_id
_matrix_rows = fixes.matrix_rows


def fixes_that_worked(evidence: Evidence, results_dir: Path) -> list[str]:
    """What made the same code work: other launchers and fixed twins of the scenario that were
    ``ok`` in every trial of this platform's matrix; else the catalog's (unmeasured) fix."""
    scenario = evidence.scenario
    if not scenario:
        return ["Unknown: this was a `lab watch` run of an arbitrary command, not a catalog "
                "scenario. The usual fixes: start the process with `spawn` or `forkserver`, or "
                "create the client (and its threads) after the fork, in the child."]
    rows = _matrix_rows(evidence, results_dir)
    groups: dict[tuple[str, str], list[str]] = {}  # (what, fix) -> "launcher (n/n)"
    for row in rows or []:
        if row.get("status") != "run" or row.get("rate") != 1.0 or row.get("observed") != "ok":
            continue
        if row["scenario"] == scenario and row["launcher"] != evidence.launcher:
            what = ("the same scenario with a fix" if row.get("fixed_of") == scenario else
                    "other launchers of the same code")
        elif row.get("fixed_of") == scenario and row["scenario"] != scenario:
            what = f"the fixed twin `{row['scenario']}`"
        else:
            continue
        groups.setdefault((what, row.get("fix") or ""), []).append(
            f"`{row['launcher']}` ({row['trials']}/{row['trials']})")
    if groups:
        return [f"Measured by `lab matrix` on {_platform_id(evidence)}; each was `ok` in every "
                "trial:"] + [f"- {what}: {', '.join(runs)}" + (f" — {fix}" if fix else "")
                             for (what, fix), runs in groups.items()]
    return _catalog_fixes(scenario, rows is None)


def _catalog_fixes(scenario: str, no_matrix: bool) -> list[str]:
    from lab import scenarios

    why = ("no matrix results for this platform" if no_matrix else
           "the matrix here has no cell of it that was ok in every trial")
    found = []
    if scenario in scenarios.names():
        own = scenarios.get(scenario)
        found += [f"- launcher `{launcher}` (expected ok)" for launcher, verdict in
                  own.expected.items() if verdict == "ok"]
        for name in scenarios.names():
            twin = scenarios.get(name)
            if twin.fixed_of == scenario:
                found.append(f"- `{name}`: {twin.fix}")
    if not found:
        return [f"Not known: {why}, and the catalog names no fix for {md.code(scenario)}."]
    return [f"From the catalog, not measured ({why}; `python -m lab matrix` measures it):",
            *found]


def _program(argv: list[str]) -> str:
    """What a watched command runs: its script or module, else the executable's name."""
    for index, arg in enumerate(argv[1:], 1):
        if arg == "-m" and index + 1 < len(argv):
            return argv[index + 1]
        if not arg.startswith("-"):
            return Path(arg).name
    return Path(argv[0]).name if argv else "a command"


def _reproduce(evidence: Evidence) -> Iterator[str]:
    debugger = evidence.debugger.name.lower() if evidence.debugger else "gdb"
    if evidence.scenario == "celery-chromadb" and evidence.launcher:
        from lab import celery_lab

        rest = evidence.launcher.removeprefix("celery-")
        pool = next((p for p in celery_lab.POOLS if rest == p or rest.startswith(p + "-")),
                    rest)
        fix = rest[len(pool) + 1:] or "none"
        lab_cmd = (f"python -m lab run celery-chromadb --pool {pool} --fix {fix} "
                   f"--debugger {debugger}")
    elif evidence.scenario:
        lab_cmd = (f"python -m lab run {evidence.scenario} --launcher {evidence.launcher} "
                   f"--debugger {debugger}")
    else:
        lab_cmd = f"python -m lab watch --debugger {debugger} -- {shlex.join(evidence.command)}"
    yield ("In a checkout of the lab, on Linux (Python 3.10+, gdb; `make venv` installs the rest "
           "into `.venv/`):")
    yield ""
    yield from md.fence(["make venv", f".venv/bin/{lab_cmd}"], "sh")
    yield ""
    ending = {"deadlock": "hangs: stop it with Ctrl-C", "hang": "does not finish"}.get(
        evidence.verdict or "", f"ends with verdict {md.text(evidence.verdict)}")
    yield f"The program alone, without the lab (it {ending}):"
    yield ""
    yield from md.fence([shlex.join(evidence.command)], "sh")


def _debug_thread(evidence: Evidence, blocked: ProcessRecord | None) -> DebugThread | None:
    dbg = evidence.debugger
    if not dbg or not dbg.threads:
        return None
    tids = {t.tid for t in blocked.threads} if blocked else set()
    return next((t for t in dbg.threads if t.tid in tids), dbg.threads[0])


def _format_stacks(evidence: Evidence, blocked: ProcessRecord | None) -> Iterator[str]:
    """What the debugger saw of the blocked thread: its Python stack and top native frames."""
    dbg = evidence.debugger
    if dbg is None:
        yield ("No debugger captured this run (it ran with `--debugger none`); the reproduce "
               "command below attaches one.")
        yield ""
        return
    name = " ".join(md.text(part) for part in (dbg.name, dbg.version) if part)
    yield f"Captured by {name}" + (f" attached to PID {dbg.pid}" if dbg.pid else "") + "."
    if dbg.error:
        yield f"The debugger reported: {md.text(dbg.error)}"
    yield from render.format_debugger_facts(dbg, ("stop_reason", "signal", "instruction"))
    yield ""
    thread = _debug_thread(evidence, blocked)
    if thread is None:
        yield "No stack was recorded."
        yield ""
        return
    if thread.python_frames:
        yield f"Python stack of thread {thread.tid} (most recent call first):"
        yield ""
        yield from render.format_python_stack(thread, TOP_PYTHON)
        yield ""
    yield f"Top native frames of thread {thread.tid}:"
    yield ""
    yield from render.format_native_stack(thread, TOP_NATIVE, source=True)
    yield ""


def _format_environment(evidence: Evidence) -> Iterator[str]:
    p = evidence.platform
    yield "## Environment"
    yield ""
    yield f"- OS: {md.text(p.system)}, architecture {md.text(p.machine)}"
    yield f"- Python {md.text(p.python)}" + (
        f" (the program's interpreter: {md.code(p.interpreter)})" if p.interpreter else "")
    yield f"- C library: {md.text(p.libc)}"
    yield f"- packages: {render.packages(p) or '- (none of the packages the lab knows)'}"
    if evidence.launcher:
        yield f"- launcher: {md.code(evidence.launcher)}"
    if evidence.watch_mode:
        yield f"- watched with: {md.text(evidence.watch_mode)}"
    env = program_environment(evidence)
    if env:
        yield "- relevant environment: " + ", ".join(md.code(f"{k}={v}") for k, v in env.items())
    yield ""


def program_environment(evidence: Evidence) -> dict[str, str]:
    """The relevant variables of the program's environment, without what the lab itself set
    (its LAB_* variables, its startup hook's PYTHONPATH entry, what it added or changed)."""
    from lab.hook import STARTUP_DIR

    lab_set = set(evidence.lab_environment)
    env = {}
    for key, value in redact.environment(evidence.environment).items():
        if not key.startswith(RELEVANT_ENV) or key.startswith("LAB_"):
            continue
        if key == "PYTHONPATH":
            kept = [p for p in value.split(os.pathsep) if p and Path(p) != STARTUP_DIR
                    and not p.endswith(os.path.join("lab", "hook", "startup"))]
            if not kept:
                continue
            value = os.pathsep.join(kept)
        elif key in lab_set:
            continue
        env[key] = value
    return env


def _format_blocked(blocked: ProcessRecord | None) -> Iterator[str]:
    yield "## Where it is blocked (decoded from /proc)"
    yield ""
    if blocked and blocked.threads:
        detail = md.text(blocked.detail or "no detail")
        yield f"PID {blocked.pid} ({md.text(blocked.verdict)}; {detail}):"
        yield ""
        yield from render.format_blocking_calls(blocked)
    else:
        yield "No process with the run's verdict had threads recorded."
    yield ""


def _format_files(evidence: Evidence, run_dir: Path | None) -> Iterator[str]:
    """The files of the run directory the report is written into: the one given, never the
    ``evidence_dir`` inside evidence.json, which is wherever the run was first written (the
    bundle may have been moved, or the JSON edited to point anywhere)."""
    files = {"report.md"}
    if run_dir is not None and Path(run_dir).is_dir():
        files.update(f.name for f in Path(run_dir).iterdir()
                     if f.is_file() and not f.name.startswith("."))
    yield "## Files in this bundle"
    yield ""
    yield (", ".join(md.code(name) for name in sorted(files)) +
           f" (run id {md.code(evidence.run_id)}).")
    yield ""


def _format_report(evidence: Evidence, results_dir: Path, run_dir: Path | None
                   ) -> Iterator[str]:
    title = evidence.scenario or _program(evidence.command)
    yield f"# Bug report: {md.text(title)}: {md.text(evidence.verdict or 'no verdict')}"
    yield ""
    verdict = (render.expectation(evidence) or
               f"Observed **{md.text(evidence.verdict)}**.")
    if evidence.detect_s is not None:
        verdict += f" The lab reached that verdict {evidence.detect_s:.3f} s after the launch."
    yield verdict
    yield ""
    yield EXPLAIN.get(evidence.verdict or "", "")
    yield ""
    yield from _format_environment(evidence)
    yield "## Command"
    yield ""
    yield from md.fence([shlex.join(redact.argv(evidence.command))], "sh")
    yield ""
    blocked = render.culprit(evidence)
    if blocked is not None and blocked.fault is not None:
        yield from render.format_crash(blocked)
    else:
        yield from _format_blocked(blocked)
    if evidence.parent.threads_at_fork:
        yield from render.format_threads_at_fork(evidence.parent)
    else:
        yield "## Threads the child did not inherit"
        yield ""
        yield ("None recorded: no fork that made the culprit left another thread behind, or "
               "the fork was not seen (the lab's fork hook was off, `LAB_NO_FORK_HOOK=1`, or "
               "the parent had already exited when the lab looked in /proc).")
        yield ""
    if evidence.forensics:
        yield "## Whose lock it is"
        yield ""
        yield from render.format_forensics(evidence.forensics)
        yield ""
    yield "## Stacks"
    yield ""
    yield from _format_stacks(evidence, blocked)
    how = list(render.format_how_to_fix(evidence, results_dir))
    if evidence.scenario or not how:
        yield "## The fix that worked"
        yield ""
        yield from fixes_that_worked(evidence, results_dir)
        yield ""
    yield from how
    yield "## How to reproduce"
    yield ""
    yield from _reproduce(evidence)
    yield ""
    yield from _format_files(evidence, run_dir)


def report_markdown(evidence: Evidence, results_dir: Path = Path("results"),
                    run_dir: Path | None = None) -> str:
    """The text of report.md for ``evidence`` (secrets masked; see ``scrub``), listing the
    files of ``run_dir`` (none but report.md without one)."""
    # Scrub every value before it is escaped: an escaped secret (a `*` as `\*`) no longer has
    # the shape or the verbatim value that scrub() looks for in the finished text.
    clean = from_dict(_scrub_tree(evidence.to_dict()))
    return scrub("\n".join(_format_report(clean, results_dir, run_dir)))


def _scrub_tree(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _scrub_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_tree(item) for item in value]
    return value


def scrub(text: str) -> str:
    """Mask secrets: the shapes ``redact.text`` knows, and the value of every secret-looking
    variable of this process's environment (the run may have inherited it)."""
    redact.learn(os.environ)
    return redact.text(text)


def write_report(run_dir: Path, results_dir: Path = Path("results")) -> Path:
    """Write ``run_dir/report.md`` atomically; return its path. Raises BadInput (no run)."""
    evidence = load_run(run_dir)
    target = Path(run_dir) / "report.md"
    write_atomic(target, shorten_home(report_markdown(evidence, results_dir, run_dir)))
    return target


def shorten_home(text: str) -> str:
    """Paths under the user's home as ``~/...``: a bug report need not carry it (evidence.json
    keeps the whole paths)."""
    home = os.path.expanduser("~").rstrip(os.sep)
    return text.replace(home + os.sep, "~" + os.sep) if home and home != "~" else text
