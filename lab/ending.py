"""The story of a run in its last lines on stderr: verdict, culprit, where it waits, the fix.

``summary.md`` holds the whole of it; these few lines are what a user reads first, at the end
of ``run``, ``watch`` and ``inspect``: the verdict and PID; the thread that held the lock at
the fork (name, TID, ``file:line``), or the native library whose threads the child lost; where
the child waits (``file:line``, else its system call); the fix in one sentence fitted to the
program (``lab.fixes``); then where the evidence is. Values from the program are made safe
for a terminal (no control characters) and cut to a line.
"""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path

from lab import fixes, locksite
from lab.evidence import Evidence, ProcessRecord
from lab.progress import shown

MAX_VALUE = 120  # characters of one value from the program (a statement, a thread's name)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
FAILURES = ("deadlock", "hang", "crash", "error", "data-loss")
_UNNAMED = ("Python threading", "native thread, not started", "unknown")  # no library named


def lines(evidence: Evidence) -> list[str]:
    """The story, one string a line (without the ``lab:`` prefix)."""
    record = next((r for r in evidence.processes if r.verdict == evidence.verdict), None)
    told = [_headline(evidence, record)]
    if record is not None and evidence.verdict in FAILURES:
        told += _why(evidence, record)
    if evidence.evidence_dir:
        told.append(f"evidence: {shown(Path(evidence.evidence_dir) / 'summary.md')}")
    return told


def text(evidence: Evidence) -> str:
    return "".join(f"lab: {line}\n" for line in lines(evidence))


def _headline(evidence: Evidence, record: ProcessRecord | None) -> str:
    verdict = evidence.verdict or "no verdict"
    if record is None or evidence.verdict not in FAILURES:
        count = len(evidence.processes)
        return f"{verdict}: {count} process(es) judged" + (
            f", expected {evidence.expected}" if evidence.expected else "")
    what = " ".join(record.argv[:3]) if record.argv else ""
    proof = "proven" if record.proof else ""
    extra = ", ".join(p for p in (proof, f"expected {evidence.expected}"
                                  if evidence.expected else "") if p)
    return (f"{verdict}: PID {record.pid}" + (f" ({_safe(what)})" if what else "")
            + (f", {extra}" if extra else ""))


def _why(evidence: Evidence, record: ProcessRecord) -> list[str]:
    told = []
    parent = evidence.parent if record.pid in evidence.parent.children else None
    culprit = parent.culprit if parent is not None else None
    if culprit and culprit.get("statement"):
        where = f"{os.path.basename(str(culprit.get('file', '?')))}:{culprit.get('line', '?')}"
        told.append(f"culprit: thread {_safe(culprit.get('name'))} (TID {culprit.get('tid')}) "
                    f"was inside `{_safe(culprit.get('statement'))}` at {where} when PID "
                    f"{parent.pid} forked: the child inherited {_safe(culprit.get('lock'))} "
                    "locked")
    elif culprit:
        told.append(f"culprit: thread {_safe(culprit.get('name'))} (TID {culprit.get('tid')}), "
                    f"the {_safe(culprit.get('why', 'thread the child lacks'))}")
    elif parent is not None and parent.threads_at_fork:
        libraries = sorted({t.library for t in parent.threads_at_fork if t.library
                            and not t.library.startswith(_UNNAMED)})
        counts = collections.Counter(t.python_name or t.name for t in parent.threads_at_fork)
        names = [f"{name} ×{n}" if n > 1 else name for name, n in counts.most_common(6)]
        told.append(f"lost at the fork: {len(parent.threads_at_fork)} thread(s) of PID "
                    f"{parent.pid} the child does not have: {_safe(', '.join(names))}"
                    + (f" ({_safe('; '.join(libraries[:3]))})" if libraries else ""))
    if evidence.wait_for_cycle:
        told.append(f"wait-for cycle: {_safe(evidence.wait_for_cycle['summary'], 400)}")
    waits = _wait_site(evidence, record, (culprit or {}).get("lock"))
    if waits:
        who = "the child" if parent is not None else f"PID {record.pid}"
        told.append(f"{who} waits {waits}")
    fix = _fix(evidence)
    if fix:
        told.append(f"fix: {fix}")
    return told


def _wait_site(evidence: Evidence, record: ProcessRecord, lock: str | None) -> str | None:
    """``at file:line: statement`` of the child's innermost frame of its own code, else the
    system call its first thread sleeps in."""
    for frame in fixes.python_frames(evidence, record.pid):
        if locksite.is_stdlib(frame.file) or frame.line is None:
            continue
        statement = locksite.line_text(frame.file, frame.line) or ""
        statement = statement.split("#", 1)[0].strip()
        where = f"{os.path.basename(frame.file)}:{frame.line}"
        return f"at {where}" + (f": {_safe(statement)}" if statement else "")
    for thread in record.threads:
        if thread.syscall is not None and thread.syscall.name:
            return f"in {thread.syscall.name}() (thread {thread.tid}, from /proc)"
    return None


def _fix(evidence: Evidence) -> str | None:
    """The first fix the advice gives, as one sentence, with the line of code that makes it
    (``os.register_at_fork(...)``, ``get_context(...)``) when it has one."""
    try:
        advice = fixes.advise(evidence)
    except Exception:  # the story is told without a fix rather than not at all
        return None
    if advice is None or not advice.fixes:
        return None
    first = advice.fixes[0]
    sentence = _say(first.title)
    key = next((line.strip() for line in first.code if "register_at_fork" in line
                or "get_context" in line or "pthread_atfork(" in line), None)
    return sentence + (f": {key}" if key else "")


def _say(line: fixes.Say) -> str:
    values = {}
    for key, value in line.values.items():
        if isinstance(value, (list, tuple)):
            values[key] = ", ".join(_safe(item) for item in value)
        else:
            values[key] = _safe(value)
    return _safe(line.template.format(**values).replace("`", ""), limit=400)


def _safe(value, limit: int = MAX_VALUE) -> str:
    text = _UNSAFE.sub("?", str(value if value is not None else "?"))
    return text if len(text) <= limit else text[: limit - 1] + "…"
