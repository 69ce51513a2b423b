"""``lab report RUN_DIR``: a bug report (report.md) a maintainer can read without the lab."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from lab import redact
from lab.errors import BadInput
from lab.evidence import DebugThread, Evidence, ProcessRecord, from_dict, write_atomic
from lab.render import _blocking_calls, _culprit

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
    try:
        return from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise BadInput(f"no evidence.json in {run_dir}: not a run directory of the lab") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{path} is not an evidence document: {exc}") from None


def _platform_id(evidence: Evidence) -> str:
    from lab.envinfo import platform_key

    return platform_key(evidence.platform).lower()


def _matrix_rows(evidence: Evidence, results_dir: Path) -> list[dict] | None:
    path = Path(results_dir) / f"{_platform_id(evidence)}.json"
    try:
        return json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
        return [f"Not known: {why}, and the catalog names no fix for `{scenario}`."]
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


def _reproduce(evidence: Evidence) -> list[str]:
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
    return ["In a checkout of the lab, on Linux (Python 3.10+, gdb; `make venv` installs the "
            "rest into `.venv/`):", "", "```sh", "make venv", f".venv/bin/{lab_cmd}", "```", "",
            "The program alone, without the lab (it " +
            {"deadlock": "hangs: stop it with Ctrl-C", "hang": "does not finish"}.get(
                evidence.verdict or "", f"ends with verdict {evidence.verdict}") + "):", "",
            "```sh", shlex.join(evidence.command), "```"]


def _debug_thread(evidence: Evidence, culprit: ProcessRecord | None) -> DebugThread | None:
    dbg = evidence.debugger
    if not dbg or not dbg.threads:
        return None
    blocked = {t.tid for t in culprit.threads} if culprit else set()
    return next((t for t in dbg.threads if t.tid in blocked), dbg.threads[0])


def _stacks(evidence: Evidence, culprit: ProcessRecord | None) -> list[str]:
    dbg = evidence.debugger
    if dbg is None:
        return ["No debugger captured this run (it ran with `--debugger none`); the reproduce "
                "command below attaches one.", ""]
    out = [f"Captured by {dbg.name} {dbg.version or ''}".rstrip() +
           (f" attached to PID {dbg.pid}" if dbg.pid else "") + "."]
    if dbg.error:
        out.append(f"The debugger reported: {dbg.error}")
    for key in ("stop_reason", "signal", "instruction"):
        if getattr(dbg, key):
            out.append(f"- {key.replace('_', ' ')}: `{getattr(dbg, key)}`")
    out.append("")
    thread = _debug_thread(evidence, culprit)
    if thread is None:
        return out + ["No stack was recorded.", ""]
    if thread.python_frames:
        out += [f"Python stack of thread {thread.tid} (most recent call first):", "", "```"]
        out += [f'File "{f.file}", line {f.line}, in {f.function}'
                for f in thread.python_frames[:TOP_PYTHON]]
        out += ["```", ""]
    out += [f"Top native frames of thread {thread.tid}:", "", "```"]
    for f in thread.frames[:TOP_NATIVE]:
        where = f" ({f.library})" if f.library else ""
        source = f" at {f.file}:{f.line}" if f.file else ""
        out.append(f"#{f.index:<2} {f.pc or '?':>18} {f.function or '??'}{where}{source}")
    if len(thread.frames) > TOP_NATIVE:
        out.append(f"... {len(thread.frames) - TOP_NATIVE} more frames in evidence.json")
    return out + ["```", ""]


def report_markdown(evidence: Evidence, results_dir: Path = Path("results")) -> str:
    """The text of report.md for ``evidence`` (secrets masked; see ``scrub``)."""
    p = evidence.platform
    title = evidence.scenario or _program(evidence.command)
    out = [f"# Bug report: {title}: {evidence.verdict or 'no verdict'}", ""]
    if evidence.expected:
        same = "as expected" if evidence.expected == evidence.verdict else "NOT as expected"
        out += [f"Expected **{evidence.expected}**, observed **{evidence.verdict}** ({same})."]
    else:
        out += [f"Observed **{evidence.verdict}**."]
    if evidence.detect_s is not None:
        out[-1] += f" The lab reached that verdict {evidence.detect_s:.3f} s after the launch."
    out += ["", EXPLAIN.get(evidence.verdict or "", ""), "", "## Environment", ""]
    out += [f"- OS: {p.system}, architecture {p.machine}", f"- Python {p.python}",
            f"- C library: {p.libc}",
            f"- packages: {', '.join(f'{k} {v}' for k, v in p.packages.items()) or '-'}"]
    if evidence.launcher:
        out.append(f"- launcher: `{evidence.launcher}`")
    if evidence.watch_mode:
        out.append(f"- watched with: {evidence.watch_mode}")
    env = {k: v for k, v in redact.environment(evidence.environment).items()
           if k.startswith(RELEVANT_ENV)}
    if env:
        out.append("- relevant environment: " +
                   ", ".join(f"`{k}={v}`" for k, v in env.items()))
    out += ["", "## Command", "", "```sh", shlex.join(redact.argv(evidence.command)), "```", ""]

    culprit = _culprit(evidence)
    out += ["## Where it is blocked (decoded from /proc)", ""]
    if culprit and culprit.threads:
        out += [f"PID {culprit.pid} ({culprit.verdict}; {culprit.detail or 'no detail'}):", ""]
        out += _blocking_calls(culprit)
    else:
        out.append("No process with the run's verdict had threads recorded.")
    out.append("")
    if evidence.parent.threads_at_fork:
        out += [f"## Threads of the parent (PID {evidence.parent.pid}) the child did not "
                "inherit", "", "| TID | name | started by |", "|---|---|---|"]
        out += [f"| {t.tid} | `{t.name}` | {t.library} |" for t in
                evidence.parent.threads_at_fork]
        out.append("")
    else:
        out += ["## Threads the child did not inherit", "",
                "Not recorded: only `lab run` scenarios report the parent's threads at the fork "
                "(a `lab watch` of an arbitrary program has no hook inside it).", ""]
    if evidence.forensics:
        out += ["## Whose lock it is", ""]
        out += [f"- {f.get('summary')}" for f in evidence.forensics]
        out.append("")
    out += ["## Stacks", ""] + _stacks(evidence, culprit)
    out += ["## The fix that worked", ""] + fixes_that_worked(evidence, results_dir) + [""]
    out += ["## How to reproduce", ""] + _reproduce(evidence) + [""]
    files = sorted(f.name for f in Path(evidence.evidence_dir or ".").iterdir()
                   if f.is_file() and not f.name.startswith(".")) \
        if evidence.evidence_dir and Path(evidence.evidence_dir).is_dir() else []
    out += ["## Files in this bundle", "",
            ", ".join(f"`{name}`" for name in sorted({*files, "report.md"})) +
            f" (run id `{evidence.run_id}`).", ""]
    return scrub("\n".join(out))


def scrub(text: str) -> str:
    """Mask URL credentials and token shapes, then any value of a secret-looking variable of
    this process's environment that still appears verbatim (the run may have inherited it)."""
    text = redact.text(text)
    for name, value in os.environ.items():
        if redact.is_secret_name(name) and len(value) >= 8 and value in text:
            text = text.replace(value, redact.MASK)
    return text


def write_report(run_dir: Path, results_dir: Path = Path("results")) -> Path:
    """Write ``run_dir/report.md`` atomically; return its path. Raises BadInput (no run)."""
    evidence = load_run(run_dir)
    target = Path(run_dir) / "report.md"
    write_atomic(target, report_markdown(evidence, results_dir))
    return target
