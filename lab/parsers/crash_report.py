"""Parse a macOS crash report in text (a legacy ``.crash``, a "Translated Report") into evidence."""

# Apple's layout ("Examining the fields in a crash report", TN2123): a header of "Key: value"
# lines (Process, Parent Process, Code Type, OS Version, Exception Type and Codes, Termination
# Reason), "Application Specific Information:" lines up to a blank line, one block per thread
# ("Thread 0 Crashed:: Dispatch queue: com.apple.main-thread", then "0   libdispatch.dylib
# 0x19da0660c _dispatch_sema4_wait.cold.1 + 32"), the crashed thread's registers ("Thread 0
# crashed with ARM Thread State (64-bit):") and "Binary Images:". A paste of any part of it (the
# header alone, one thread's frames alone) gives what that part holds. Every line is split by
# str methods, once: no pattern here can backtrack across a long line.

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lab.evidence import DebuggerInfo, DebugThread, Frame
from lab.parsers.transcript import EXCEPTION_SIGNALS, Parsed, clean_lines

NAME = "macos-crash-report"
# Header keys, as the report writes them, and the fact each one becomes.
HEADER = {
    "Process": "process", "Path": "path", "Identifier": "identifier", "Version": "version",
    "Code Type": "code_type", "Parent Process": "parent_process", "Responsible": "responsible",
    "User ID": "user_id", "Date/Time": "date", "Launch Time": "launch_time",
    "OS Version": "os_version", "Report Version": "report_version",
    "Incident Identifier": "incident", "Hardware Model": "hardware_model",
    "Crashed Thread": "crashed_thread", "Triggered by Thread": "crashed_thread",
    "Exception Type": "exception_type", "Exception Codes": "exception_codes",
    "Exception Subtype": "exception_subtype", "Exception Note": "exception_note",
    "Exception Reason": "exception_reason", "Exception Message": "exception_message",
    "Termination Reason": "termination_reason", "Termination Signal": "termination_signal",
    "Terminating Process": "terminating_process",
}
SECTIONS = {"Application Specific Information:": "application_specific",
            "Application Specific Signatures:": "application_signatures",
            "Kernel Triage:": "kernel_triage"}
# Code Type -> the machine as platform.machine() names it.
MACHINES = {"ARM-64": "arm64", "ARM64": "arm64", "ARM64E": "arm64", "X86-64": "x86_64",
            "X86_64": "x86_64", "X86": "i386"}
_THREAD = re.compile(r"^Thread (?P<number>\d+)(?P<crashed> Crashed)?(?P<colons>::?)\s*"
                     r"(?P<rest>.*)$")
_THREAD_NAME = re.compile(r"^Thread (?P<number>\d+) name:\s*(?P<rest>.*)$")
_STATE = re.compile(r"^Thread \d+ crashed with (?P<flavor>.+) Thread State")
_REGISTER = re.compile(r"(?P<name>[a-z][a-z0-9]*): +(?P<value>0x[0-9a-fA-F]+)")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_PID = re.compile(r"^(?P<name>.*?) \[(?P<pid>\d+)\]")
_SIGNAL = re.compile(r"\((?P<signal>SIG[A-Z0-9]+)\)")


@dataclass
class _Report:
    """What has been read of one report; a second report in the text starts a fresh one."""

    facts: dict[str, Any] = field(default_factory=lambda: {"format": "text"})
    threads: dict[int, DebugThread] = field(default_factory=dict)
    queues: dict[int, str] = field(default_factory=dict)
    registers: dict[str, str] = field(default_factory=dict)
    crashed: int | None = None
    current: int | None = None  # the thread whose frames are listed
    section: str | None = None  # a multi-line section being read (application specific...)
    in_registers: bool = False
    in_images: bool = False  # "Binary Images:": nothing more of this report is kept


def read_crash_report(text: str, transcript: str | None = None) -> Parsed:
    """Everything a text crash report (or a piece of one) holds; of several reports pasted
    one after the other, the last."""
    report = _Report()
    for line in clean_lines(text):
        stripped = line.strip()
        if stripped.startswith(("Process:", "Incident Identifier:")) and (
                "process" in report.facts or report.threads):
            report = _Report()  # another report begins
        if not stripped:
            report.current, report.section, report.in_registers = None, None, False
        elif not report.in_images or _THREAD.match(stripped):
            report.in_images = False
            _line(report, stripped)
    facts = report.facts
    if report.crashed is not None:
        facts.setdefault("crashed_thread", str(report.crashed))
    return report_parsed(facts, report.threads, report.queues, report.registers, transcript)


def _line(report: _Report, stripped: str) -> None:
    facts, threads = report.facts, report.threads
    if stripped.startswith("Translated Report"):
        facts["format"] = "translated report"
    elif report.section:
        facts.setdefault(report.section, []).append(stripped)
    elif report.in_registers:
        report.registers.update((m["name"], m["value"]) for m in _REGISTER.finditer(stripped))
    elif stripped in SECTIONS:
        report.section = SECTIONS[stripped]
    elif stripped.startswith("Binary Images:"):
        report.in_images = True  # the load address of every image: nothing kept here
    elif state := _STATE.match(stripped):
        facts["thread_state"] = state["flavor"]
        report.in_registers = True
    elif named := _THREAD_NAME.match(stripped):
        _queue_or_name(threads, report.queues, int(named["number"]), named["rest"])
    elif header := _THREAD.match(stripped):
        report.current = int(header["number"])
        threads.setdefault(report.current, DebugThread(tid=None))
        if header["crashed"]:
            report.crashed = report.current
        _queue_or_name(threads, report.queues, report.current, header["rest"])
    elif (frame := crash_frame(stripped)) is not None:
        number = report.current if report.current is not None else -1
        thread = threads.setdefault(number, DebugThread(tid=None))
        if not thread.frames or thread.frames[-1].index != frame.index:
            thread.frames.append(frame)
    else:
        key, colon, value = stripped.partition(":")
        if colon and key in HEADER and HEADER[key] not in facts:
            facts[HEADER[key]] = value.strip()


def crash_frame(line: str) -> Frame | None:
    """``0   libdispatch.dylib   0x19da0660c _dispatch_sema4_wait.cold.1 + 32 (file.c:12)``;
    an unsymbolicated one ends ``0x104938000 + 16804``; None for any other line."""
    words = line.split()
    if len(words) < 3 or not words[0].isdigit():
        return None
    at = next((i for i in range(2, len(words)) if _HEX.fullmatch(words[i])), None)
    if at is None:
        return None
    frame = Frame(index=int(words[0]), pc=words[at], library=" ".join(words[1:at]))
    rest = " ".join(words[at + 1:])
    if rest.endswith(")") and " (" in rest:
        where, _, location = rest[:-1].rpartition(" (")
        file, _, number = location.rpartition(":")
        if file and number.isdigit():
            frame.file, frame.line, rest = file, int(number), where
    symbol, plus, offset = rest.rpartition(" + ")
    if plus and offset.isdigit():
        frame.offset, rest = int(offset), symbol
    if rest and rest != "???" and not _HEX.fullmatch(rest):
        frame.function = rest
    return frame


def _queue_or_name(threads: dict[int, DebugThread], queues: dict[int, str], number: int,
                   rest: str) -> None:
    rest = rest.strip()
    thread = threads.setdefault(number, DebugThread(tid=None))
    if rest.startswith("Dispatch queue:"):
        queues[number] = rest.partition(":")[2].strip()
    elif rest:
        thread.name = rest


def report_parsed(facts: dict[str, Any], threads: dict[int, DebugThread],
                  queues: dict[int, str], registers: dict[str, str],
                  transcript: str | None) -> Parsed:
    """The Parsed of a crash report, text or JSON: the crashed thread first, its registers."""
    process = _PID.match(str(facts.get("process") or ""))
    if process:
        facts["process"], facts["pid"] = process["name"], int(process["pid"])
    parent = _PID.match(str(facts.get("parent_process") or ""))
    if parent:
        facts["parent_process"], facts["parent_pid"] = parent["name"], int(parent["pid"])
    crashed = _int(facts.get("crashed_thread"))
    if queues:
        facts["queues"] = {str(n): q for n, q in sorted(queues.items())}
    numbers = sorted(threads, key=lambda n: (n != crashed, n))
    info = DebuggerInfo(name=NAME, transcript=transcript, pid=_int(facts.get("pid")),
                        registers=registers,
                        threads=[threads[n] for n in numbers if threads[n].frames])
    info.version = facts.get("report_version") and f"report version {facts['report_version']}"
    exception = facts.get("exception_type")
    if exception:
        codes = facts.get("exception_codes")
        info.stop_reason = exception + (f", codes {codes}" if codes else "")
        signal = _SIGNAL.search(exception)
        info.signal = signal["signal"] if signal else EXCEPTION_SIGNALS.get(exception.split()[0])
    notes = facts.get("application_specific") or []
    info.message = "; ".join(notes) or None
    # The report's own number of each thread in debugger.threads (-1: frames with no header).
    facts["thread_numbers"] = [n for n in numbers if threads[n].frames]
    code = str(facts.get("code_type") or "").split(" ")[0].upper()
    return Parsed(info=info, system="Darwin", machine=MACHINES.get(code),
                  executable=facts.get("path"), kind="crash",
                  format=f"macOS crash report ({facts.get('format')})", facts=facts)


def _int(value: Any) -> int | None:
    try:
        return int(str(value).split()[0])
    except (ValueError, IndexError):
        return None
