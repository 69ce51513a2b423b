"""What a parsed text shows beyond its stacks: each thread's wait, the fork, its scenario."""

from __future__ import annotations

from typing import Any

from lab.evidence import ThreadState
from lab.parsers.diagnosis import broken_rate, fork_signs, measured_fixes, scenario_for
from lab.parsers.transcript import Parsed
from lab.parsers.waits import snapshot, thread_waits

NO_FORK = ("nothing in the text shows a fork (no fork or atfork frame, no fork start method on "
           "a Python stack, no fork message, no Python parent process)")
LIVE = "python -m lab inspect PID reads the fork story from a live process"
# Facts of the parsers' own bookkeeping, not of the text.
_INTERNAL = ("threads",)


def diagnose(parsed: Parsed, decoded: ThreadState | None = None) -> dict[str, Any]:
    """The ``parsed`` section of the evidence: kind, format, waits, snapshot, fork, facts."""
    idle = frozenset(entry["tid"] for entry in parsed.facts.get("threads") or []
                     if isinstance(entry, dict) and entry.get("active") is False)
    labels = None
    if parsed.kind == "crash":
        crashed = str(parsed.facts.get("crashed_thread", "")).split(" ")[0]
        labels = [f"report thread {n}" + (", crashed" if str(n) == crashed else "")
                  for n in parsed.facts.get("thread_numbers", [])]
    waits = thread_waits(parsed.info.threads, parsed.args, parsed.python_args, decoded, idle,
                         labels)
    statement, all_untimed = snapshot(waits)
    signs = fork_signs(parsed)
    fork: dict[str, Any] = {"shown": bool(signs), "signs": signs}
    if signs:
        scenario, why = scenario_for(parsed, waits)
        fork.update(scenario=scenario, why=why)
        if scenario:
            fork["observed"] = broken_rate(scenario)
            fork["fixes"] = measured_fixes(scenario)
        else:
            fork["note"] = ("no catalog scenario matches the frames; the generic fixes hold: "
                            "start the child with forkserver or spawn, or create the "
                            "threads' owner after the fork")
    else:
        fork["note"] = f"{NO_FORK}; {LIVE}"
    found: dict[str, Any] = {"kind": parsed.kind, "format": parsed.format,
                             "snapshot": None if parsed.kind == "crash" else statement,
                             "all_untimed": all_untimed and parsed.kind != "crash",
                             "waits": [wait.to_dict() for wait in waits], "fork": fork}
    facts = {key: value for key, value in parsed.facts.items() if key not in _INTERNAL}
    if parsed.kind == "py-spy":
        facts["threads"] = parsed.facts.get("threads") or []
    if facts:
        found["report" if parsed.kind == "crash" else "facts"] = facts
    return found
