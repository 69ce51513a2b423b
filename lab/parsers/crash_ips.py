"""Parse a macOS 12+ crash report in its JSON form (``.ips``: a header line, then the report)."""

# An .ips file is two JSON documents: one line of metadata (app_name, os_version, bug_type 309
# for a crash), then the report, pretty-printed one top-level key per line: procName, pid,
# parentProc, cpuType, exception {type, signal, codes, subtype}, termination {namespace, code,
# indicator}, asi {library: [lines]} (the "Application Specific Information"), faultingThread
# and threads [{frames: [{imageIndex, imageOffset, symbol, symbolLocation}], threadState}],
# usedImages [{name, base}]. A frame's address is its image's base plus its offset. A paste cut
# short is still read: each top-level line that parses alone is kept (json is linear time).

from __future__ import annotations

from typing import Any

from lab import untrusted
from lab.evidence import DebugThread, Frame
from lab.parsers.crash_report import report_parsed
from lab.parsers.transcript import Parsed

# Top-level keys of the report (or of its header line) that mark an .ips.
MARKERS = ('"bug_type"', '"procName"', '"faultingThread"', '"usedImages"', '"app_name"')
_TOP = '  "'  # a top-level key of the pretty-printed report: two spaces, then the quoted name


def looks_like_ips(text: str) -> bool:
    """Whether ``text`` is (a piece of) an .ips report: JSON with its keys."""
    return text.lstrip().startswith("{") and any(marker in text for marker in MARKERS)


def read_ips(text: str, transcript: str | None = None) -> Parsed:
    """Everything an .ips crash report (or a piece of one) holds."""
    header, body = _documents(text.strip())
    facts: dict[str, Any] = {"format": "ips"}
    if header.get("bug_type") or body.get("bug_type"):
        facts["bug_type"] = str(body.get("bug_type") or header.get("bug_type"))
    facts["process"] = body.get("procName") or header.get("app_name") or header.get("name")
    facts["pid"] = body.get("pid")
    facts["path"] = body.get("procPath")
    facts["identifier"] = header.get("bundleID") or (body.get("bundleInfo") or {}).get(
        "CFBundleIdentifier")
    facts["version"] = header.get("app_version")
    facts["code_type"] = body.get("cpuType")
    facts["parent_process"] = body.get("parentProc")
    facts["parent_pid"] = body.get("parentPid")
    facts["responsible"] = body.get("responsibleProc")
    facts["date"] = body.get("captureTime") or header.get("timestamp")
    facts["os_version"] = _os_version(header, body)
    facts["incident"] = header.get("incident_id") or body.get("incident")
    _exception(facts, body)
    asi = body.get("asi") if isinstance(body.get("asi"), dict) else {}
    lines = [str(line) for values in asi.values() if isinstance(values, list) for line in values]
    if lines:
        facts["application_specific"] = lines
    if isinstance(body.get("ktriageinfo"), str):
        facts["kernel_triage"] = body["ktriageinfo"].strip().splitlines()
    crashed = body.get("faultingThread")
    images = [image for image in body.get("usedImages") or [] if isinstance(image, dict)]
    threads: dict[int, DebugThread] = {}
    queues: dict[int, str] = {}
    registers: dict[str, str] = {}
    for number, entry in enumerate(body.get("threads") or []):
        if not isinstance(entry, dict):
            continue
        if entry.get("triggered") and crashed is None:
            crashed = number
        thread = threads[number] = DebugThread(tid=_int(entry.get("id")), name=entry.get("name"))
        thread.frames = [_frame(i, f, images) for i, f in enumerate(entry.get("frames") or [])
                         if isinstance(f, dict)]
        if entry.get("queue"):
            queues[number] = str(entry["queue"])
        if number == crashed or entry.get("triggered"):
            registers = _registers(entry.get("threadState"), facts)
    if crashed is not None:
        facts["crashed_thread"] = str(crashed)
    facts = {key: value for key, value in facts.items() if value not in (None, "", [])}
    return report_parsed(facts, threads, queues, registers, transcript)


def _documents(text: str) -> tuple[dict, dict]:
    """(header, report): the header line and the report after it; a report alone, or either
    one cut short, gives what could be read of it."""
    first, _, rest = text.partition("\n")
    header = _load(first)
    if header is not None and rest.strip():
        body = _load(rest) or _salvage(rest)
        return header, body
    if header is not None:  # one line only: a header, or a whole report on one line
        return ({}, header) if "procName" in header or "threads" in header else (header, {})
    return {}, _load(text) or _salvage(text)


def _load(text: str) -> dict | None:
    """The JSON object ``text`` holds, or None; BadInput for one nested deeper than the lab
    reads (lab.untrusted), and a number out of range read as null."""
    try:
        value = untrusted.loads(text, "the crash report", clamp=True)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _salvage(text: str) -> dict:
    """The top-level ``  "key" : value,`` lines of a cut report that parse on their own."""
    found: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.startswith(_TOP):
            continue
        key, sep, value = line[len(_TOP):].partition('" : ')
        value = value.rstrip().removesuffix(",")
        if sep and value:
            try:
                found[key] = untrusted.loads(value, "the crash report", clamp=True)
            except ValueError:
                continue
    return found


def _os_version(header: dict, body: dict) -> str | None:
    version = body.get("osVersion")
    if isinstance(version, dict) and version.get("train"):
        build = f" ({version['build']})" if version.get("build") else ""
        return f"{version['train']}{build}"
    return header.get("os_version")


def _exception(facts: dict[str, Any], body: dict) -> None:
    exception = body.get("exception") if isinstance(body.get("exception"), dict) else {}
    if exception.get("type"):
        signal = f" ({exception['signal']})" if exception.get("signal") else ""
        facts["exception_type"] = f"{exception['type']}{signal}"
    facts["exception_codes"] = exception.get("codes")
    facts["exception_subtype"] = exception.get("subtype")
    facts["exception_message"] = exception.get("message")
    term = body.get("termination") if isinstance(body.get("termination"), dict) else {}
    if term:
        # As the text report writes it: "Namespace SIGNAL, Code 5 Trace/BPT trap: 5".
        parts = [f"Namespace {term.get('namespace', '?')}, Code {term.get('code', '?')}"]
        if term.get("indicator"):
            parts.append(str(term["indicator"]))
        facts["termination_reason"] = " ".join(parts)
        reasons = term.get("reasons")
        if isinstance(reasons, list) and reasons:
            facts["termination_details"] = [str(reason) for reason in reasons]
        if term.get("byProc"):
            facts["terminating_process"] = f"{term['byProc']} [{term.get('byPid', '?')}]"


def _frame(index: int, entry: dict, images: list[dict]) -> Frame:
    image = images[entry["imageIndex"]] if isinstance(entry.get("imageIndex"), int) and \
        0 <= entry["imageIndex"] < len(images) else {}
    base, offset = _int(image.get("base")), _int(entry.get("imageOffset"))
    pc = hex(base + offset) if base is not None and offset is not None else None
    library = image.get("name") or (str(image.get("path", "")).rsplit("/", 1)[-1] or None)
    frame = Frame(index=index, pc=pc, library=library, function=entry.get("symbol"),
                  offset=_int(entry.get("symbolLocation")), file=entry.get("sourceFile"),
                  line=_int(entry.get("sourceLine")))
    if frame.function is None and offset is not None:
        frame.offset = offset  # unsymbolicated: the offset into its image
    return frame


def _registers(state: Any, facts: dict[str, Any]) -> dict[str, str]:
    """``threadState``: arm64 ``x`` as a list, the rest ``{"value": N}`` each."""
    if not isinstance(state, dict):
        return {}
    registers: dict[str, str] = {}
    for index, entry in enumerate(state.get("x") or []):
        if isinstance(entry, dict) and _int(entry.get("value")) is not None:
            registers[f"x{index}"] = f"0x{_int(entry['value']):016x}"
    for name, entry in state.items():
        if isinstance(entry, dict) and _int(entry.get("value")) is not None:
            registers[name] = f"0x{_int(entry['value']):016x}"
            if entry.get("description"):
                facts[f"register_{name}"] = str(entry["description"])
    if state.get("flavor"):
        facts["thread_state"] = str(state["flavor"])
    return registers


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 0)
    except ValueError:
        return None
