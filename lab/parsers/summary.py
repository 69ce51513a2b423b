"""The Markdown `lab parse` prints: what the text is, its threads' waits, the fork, the stacks."""

# Composed from lab.render's generators for the stacks (the same sections summary.md has) and
# small generators of its own for what only a parsed text has. Every value from the text goes
# through lab.markdown.

from __future__ import annotations

from collections.abc import Iterator

from lab import markdown as md
from lab.evidence import Evidence
from lab.parsers.waits import Wait, describe, headline
from lab.render import format_debug_thread, format_debugger_facts

# Crash report facts, in the order a report lists them, and how to call them.
REPORT_FACTS = (
    ("process", "process"), ("pid", "PID"), ("parent_process", "parent process"),
    ("parent_pid", "parent PID"), ("path", "path"), ("code_type", "code type"),
    ("os_version", "OS version"), ("date", "date"), ("exception_type", "exception type"),
    ("exception_codes", "exception codes"), ("exception_subtype", "exception subtype"),
    ("termination_reason", "termination reason"), ("crashed_thread", "crashed thread"),
)


def parsed_summary(evidence: Evidence, name: str, written: str | None = None) -> str:
    """The Markdown of one parsed text's evidence; ``written``: the evidence.json it was
    written to, if any (what is left out here is there, else in ``--json``'s document)."""
    return "\n".join(format_parsed(evidence, name, written)) + "\n"


def format_parsed(evidence: Evidence, name: str, written: str | None = None) -> Iterator[str]:
    found = evidence.parsed or {}
    yield f"# {md.text(name)}: {md.text(evidence.verdict or 'no verdict')}"
    yield ""
    yield f"- read as: {md.text(found.get('format') or found.get('kind') or '?')}"
    platform = evidence.platform
    if platform.system or platform.machine:
        python = f", Python {md.text(platform.python)}" if platform.python else ""
        yield f"- platform: {md.text(platform.system or '?')} {md.text(platform.machine or '?')}" \
              f"{python}"
    for record in evidence.processes:
        argv = f" {md.code(' '.join(record.argv))}" if record.argv else ""
        parent = f", parent PID {record.ppid}" if record.ppid else ""
        yield f"- PID {record.pid}{argv}{parent}: {md.text(record.detail)}"
    yield ""
    yield from format_waits(found)
    yield from format_fork(found.get("fork") or {})
    if found.get("report"):
        yield from format_report(found["report"])
    if evidence.debugger and evidence.debugger.threads:
        yield from format_stacks(evidence, found, written)
    if written:
        yield f"The whole document: {md.code(written)}"


def format_stacks(evidence: Evidence, found: dict, written: str | None = None
                  ) -> Iterator[str]:
    """What the debugger (or the report, or py-spy) said of the stop, then every thread's
    stacks, named by tid or, in a crash report, by the report's own number."""
    dbg = evidence.debugger
    yield f"## Stacks ({md.text(dbg.name)})"
    yield ""
    facts = list(format_debugger_facts(dbg))
    yield from facts
    if facts:
        yield ""
    numbers = (found.get("report") or {}).get("thread_numbers") or []
    for at, thread in enumerate(dbg.threads):
        label = f"{thread.tid}" if thread.tid is not None else (
            f"{numbers[at]} of the report" if at < len(numbers) else "?")
        yield from format_debug_thread(
            thread, label, f"in {written}" if written else "with --json (or --out DIR)")


def format_waits(found: dict) -> Iterator[str]:
    waits = found.get("waits") or []
    if not waits:
        return
    yield "## What each thread waits in"
    yield ""
    parsed = [Wait(**wait) for wait in waits]
    if found.get("snapshot"):
        yield md.text(headline(parsed))
        yield ""
    for wait in parsed:
        yield f"- {md.text(describe(wait))}"
    yield ""


def format_fork(fork: dict) -> Iterator[str]:
    yield "## The fork"
    yield ""
    if not fork.get("shown"):
        yield md.text(fork.get("note", ""))
        yield ""
        return
    yield "The text shows a fork:"
    yield ""
    for sign in fork.get("signs", []):
        yield f"- {md.code(sign['sign'])} ({md.text(sign['where'])}): {md.text(sign['means'])}"
    yield ""
    if not fork.get("scenario"):
        yield md.text(fork.get("note", ""))
        yield ""
        return
    yield (f"It matches the catalog scenario {md.code(fork['scenario'])} "
           f"({md.text(fork.get('why', ''))}); `python -m lab run {fork['scenario']}` "
           "reproduces it.")
    yield ""
    for line in fork.get("observed") or []:
        yield f"- measured, broken: {md.text(line)}"
    for fix in fork.get("fixes") or []:
        measured = "; ".join(fix.get("measured") or [])
        yield (f"- fix ({md.code(fix['scenario'])}): {md.text(fix['fix'])} — measured: "
               f"{md.text(measured)}")
    yield ""


def format_report(report: dict) -> Iterator[str]:
    yield "## The crash report"
    yield ""
    for key, label in REPORT_FACTS:
        if report.get(key) not in (None, ""):
            yield f"- {label}: {md.code(report[key])}"
    for line in report.get("application_specific") or []:
        yield f"- application specific information: {md.code(line)}"
    yield ""
