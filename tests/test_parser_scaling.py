"""Every transcript parser takes time linear in its input: 24 MB of hostile padding in seconds
(under the 32 MiB the lab reads of one file: lab.parsers.document.MAX_TRANSCRIPT_BYTES)."""

# The padding is what made them cubic or worse: blank lines (the LLDB sign pattern's "\s"
# crossed them: 4,000 took 16 s), a 1 MB line of spaces, 1 MB runs of letters, digits and dots,
# and fragments that open a pattern and fail late, repeated into one 1 MB line and into many
# short ones. It comes before the real transcript, under the commands that make each parser
# read it (a backtrace, a disassembly), so the real transcript's stop, stacks and registers
# still come last: the verdict must not change.

from __future__ import annotations

import json
import random
import re
import time

import pytest

from conftest import DATA
from lab.parsers.gdb_console import split_frame_text
from lab.parsers.gdb_mi import library_at, library_finder
from lab.parsers.mi_records import parse_record

SIZE = 24 * 1024 * 1024
LONG = 1024 * 1024
# Generous for a loaded CI machine: the linear parsers take a few seconds here, the quadratic
# and cubic ones took minutes, or never finished.
BOUND_S = 30.0

CONSOLE_CONTEXT = ["(gdb) thread apply all bt", 'Thread 1 (Thread 0x1 (LWP 1) "python"):']
CONSOLE_FRAGMENTS = [
    "#1 0x1 in f (", "#2  f (a) (b) at c:1 x", " (a", ")", " at a.c:", ":1", " from ", "#3 ",
    "    x (", 'Thread 1 ("', "Program received signal SIG", "Attaching to program: ",
    ", process ", "=> 0x1 <f+1>:\tnop", "   0x2 <f+2>:\tmov   ", "  # ", " // ", '"\\',
    "\x1b[1;", "GNU gdb ", "[Inferior 1 (process ",
]
LLDB_CONTEXT = ["(lldb) thread backtrace all", "* thread #1, name = 'python', stop reason = x"]
LLDB_FRAGMENTS = [
    "frame #1: 0x1 ", "  frame #2: 0x2 a`f at ", " + 1", " at a.c:1:", "* thread #1, tid = ",
    "name = '", "stop reason = ", "lldb ", "-p ", "-> 0x1 <+1>: nop ; \"\\", "  0x2 <+2>: ",
    "Process 1 ", "Architecture set to: ", "Current executable set to '", "`", " [inlined] ",
    "f(a=1, ", "Registers:",
]
MI_FRAGMENTS = [
    '~"', '~"\\', "~\"\\101\\", '&"', "^done,a=[", "^done,abc", "1^done,stack=[frame={level=\"",
    '=library-loaded,id="x",ranges=[{from="0x1",to="0x2"}],', "*running,thread-id=\"all\",",
    "{", "[", '"', "a=", "(gdb) ", "# lab ",
]


def _runs(fragments: list[str], size: int) -> list[str]:
    """Each fragment repeated into one long line (1 MB, less where many fragments share
    ``size``), then into short lines, round robin, until ``size`` characters are there."""
    long = min(LONG, max(size, 0) // (2 * len(fragments) or 1))
    lines = [fragment * (long // len(fragment)) for fragment in fragments]
    total = sum(len(line) + 1 for line in lines)
    shorts = [fragment * (80 // len(fragment) + 1) for fragment in fragments]
    count = max(0, size - total) // (sum(len(s) + 1 for s in shorts) or 1)
    return lines + shorts * count


def crafted(real: str, context: list[str], fragments: list[str], size: int = SIZE) -> str:
    """``real`` after ``size`` characters of padding read under the ``context`` commands."""
    padding = [*context, *[""] * LONG, " " * LONG, "a" * LONG, "7" * LONG, "." * LONG,
               "a1." * (LONG // 3), "frame.0x1" * (LONG // 9)]
    # Frames with a new index each: a parser that looks for the index among the frames it
    # already holds takes time quadratic in their number.
    padding += [f"#{i} 0x{i:x} in f{i} (a={i}) at f.c:{i}" for i in range(1, 20_000)]
    padding += [f"    frame #{i}: 0x{i:x} a`f{i} + {i}" for i in range(1, 20_000)]
    used = sum(len(line) + 1 for line in padding)
    padding += _runs(fragments, size - used - len(real))
    return "\n".join(padding) + "\n" + real


# What users paste (`lab parse auto`): a terminal's pager and wrapping, info threads, py-bt,
# bt full's locals, the older LLDB format, crash reports, py-spy dumps, and the arguments a
# futex wait's timeout is read from.
PASTED_FRAGMENTS = [
    "--Type <RET> for more, q to quit, c to continue without paging--", "---Type <return> to",
    "  Id   Target Id   Frame ", "* 1    Thread 0x1 (LWP 1) \"a\" f (", "Traceback (most recent "
    "call first):", '  File "a.py", line ', "#1 Frame 0x1, for file a.py, line 1, in f (",
    ", line ", "        x = ", "(More stack frames follow...)", "\r", "\x1b[?2004l\r",
    "abstime=abstime@entry=0x0, ", "timeout=", "microseconds=-1", "op=393, ", "FUTEX_WAIT_",
    "private=0", "__futex_abstimed_wait_common (", "PyThread_acquire_lock_timed (", "os_fork_impl",
]
OLD_LLDB_FRAGMENTS = [
    "* thread #1: tid = 1, 0x1 a`f(a=", ", name = '", ", queue = '", ", stop reason = ",
    " at a.c:1", "frame #0: 0x1 a`f(abstime=0x0, ", "timeout=-1) + 1 at ", "(", ")", "`",
]
CRASH_CONTEXT = ["Thread 0 Crashed::  Dispatch queue: com.apple.main-thread"]
CRASH_FRAGMENTS = [
    "0   lib.dylib ", "\t0x19da0660c ", "f + ", " + 1", " (a.c:", ":1)", "Thread 1:",
    "Exception Type: ", "x0: 0x1 ", "Application Specific Information:", "Process: a [1]",
    "Binary Images:", "Thread 0 crashed with ARM Thread State (64-bit):", "???", " [", "]",
    "*** multi-threaded process forked ***", "Parent Process: Python [", "Thread 2 name: ",
]
PYSPY_CONTEXT = ['Thread 1 (idle): "MainThread"']
PYSPY_FRAGMENTS = [
    "    f (a.py:1)", " (", ":1)", "Thread 1 (idle", '): "', "        Arguments:",
    "            timeout: None", "Process 1: ", "Python v3", "    0x1 (libc.so.6)", ".wait",
]

CASES = [
    pytest.param("gdb", "gdb-trap-x86_64.txt", CONSOLE_CONTEXT, CONSOLE_FRAGMENTS,
                 id="gdb console"),
    pytest.param("gdb", "gdb-chromadb-x86_64.txt", [], MI_FRAGMENTS, id="gdb MI"),
    pytest.param("lldb", "lldb-trap-x86_64.txt", LLDB_CONTEXT, LLDB_FRAGMENTS, id="lldb"),
    pytest.param("auto", "gdb-tty-lock-x86_64.txt", CONSOLE_CONTEXT,
                 CONSOLE_FRAGMENTS + PASTED_FRAGMENTS, id="auto: gdb terminal session"),
    pytest.param("auto", "gdb-batch-pool-parent-x86_64.txt", CONSOLE_CONTEXT,
                 CONSOLE_FRAGMENTS + PASTED_FRAGMENTS, id="auto: gdb thread apply all"),
    pytest.param("auto", "lldb-oldformat-lock-x86_64.txt", LLDB_CONTEXT,
                 LLDB_FRAGMENTS + OLD_LLDB_FRAGMENTS + PASTED_FRAGMENTS,
                 id="auto: lldb older format"),
    pytest.param("auto", "crash-legacy-x86_64-objc-fork-handbuilt.crash", CRASH_CONTEXT,
                 CRASH_FRAGMENTS, id="auto: macOS .crash"),
    pytest.param("auto", "crash-translated-arm64-libdispatch-handbuilt.txt", CRASH_CONTEXT,
                 CRASH_FRAGMENTS + PASTED_FRAGMENTS, id="auto: macOS Translated Report"),
    pytest.param("auto", "pyspy-pool-parent-locals.txt", PYSPY_CONTEXT,
                 PYSPY_FRAGMENTS + PASTED_FRAGMENTS, id="auto: py-spy dump"),
]


@pytest.mark.parametrize(("debugger", "name", "context", "fragments"), CASES)
def test_a_24_mb_crafted_transcript_parses_in_seconds(reaper, tmp_path, measure, debugger,
                                                       name, context, fragments):
    # GIVEN a real transcript after 24 MB of padding built to make regexes backtrack
    real = (DATA / name).read_text()
    path = tmp_path / name
    path.write_text(crafted(real, context, fragments))
    plain = reaper.lab("parse", debugger, str(DATA / name), "--json", timeout=60)
    # WHEN `python -m lab parse DEBUGGER FILE --json` reads it
    started = time.monotonic()
    result = reaper.lab("parse", debugger, str(path), "--json", timeout=300)
    seconds = time.monotonic() - started
    measure(f"lab parse {debugger} ({name} + {path.stat().st_size >> 20} MB padding)", seconds)
    # THEN it finishes well within the bound, with the verdict of the real transcript alone
    assert result.returncode == 0, result.stderr[-2000:]
    assert seconds < BOUND_S, f"{seconds:.1f} s: not linear"
    document, alone = json.loads(result.stdout), json.loads(plain.stdout)
    assert document["verdict"] == alone["verdict"]
    assert document["debugger"]["signal"] == alone["debugger"]["signal"]
    if alone["debugger"]["instruction"] or debugger != "auto":  # the padding's own listing
        assert document["debugger"]["instruction"] == alone["debugger"]["instruction"]
    if alone.get("parsed"):
        assert document["parsed"]["kind"] == alone["parsed"]["kind"]


def _crafted_json(name: str, cut: bool) -> str:
    """The real .ips or py-spy JSON with 20 MB more of it: strings of escapes and quotes,
    tens of thousands of threads and frames, images out of range; ``cut``: its end lost."""
    real = (DATA / name).read_text()
    hostile = ('\\"' * 7 + "\\u00e9 0x1 + 1 (a.c:1) ") * (LONG // 40)  # 1 MB
    if name.endswith(".ips"):
        header, body = real.split("\n", 1)
        report = json.loads(body)
        report["vmSummary"] = hostile * 10
        frames = [{"imageOffset": i, "imageIndex": i % 7, "symbol": "f" * (i % 50)}
                  for i in range(100)]
        report["threads"] += [{"id": i, "name": hostile[:200], "frames": frames}
                              for i in range(2_000)]
        report["usedImages"] += [{"base": i, "name": f"lib{i}"} for i in range(50_000)]
        lines = [f"  {json.dumps(k)} : {json.dumps(v)}" for k, v in report.items()]
        text = header + "\n{\n" + ",\n".join(lines) + "\n}\n"
    else:  # other processes first: the last one in a dump is the one read
        frames = [{"name": "wait", "filename": hostile[:30], "line": i, "module": None,
                   "locals": [{"name": "timeout", "repr": "None", "arg": True}]}
                  for i in range(100)]
        entries = [{"pid": 1, "thread_id": i, "os_thread_id": i, "thread_name": hostile[:100],
                    "active": False, "owns_gil": False, "frames": frames}
                   for i in range(1_000)]
        entries.append({"pid": 2, "thread_name": hostile * 10, "frames": []})
        text = json.dumps(entries + json.loads(real))
    return text[: len(text) * 9 // 10] if cut else text


@pytest.mark.parametrize(("name", "cut"), [
    ("crash-ips-arm64-libdispatch-handbuilt.ips", False),
    ("crash-ips-arm64-libdispatch-handbuilt.ips", True),
    ("pyspy-pool-worker.json", False),
], ids=["macOS .ips", "macOS .ips cut short", "py-spy --json"])
def test_a_20_mb_json_report_parses_in_seconds(reaper, tmp_path, measure, name, cut):
    # GIVEN a real .ips or py-spy JSON grown to tens of MB of hostile content (or cut short)
    path = tmp_path / name
    path.write_text(_crafted_json(name, cut))
    plain = json.loads(reaper.lab("parse", "auto", str(DATA / name), "--json",
                                  timeout=60).stdout)
    # WHEN `python -m lab parse auto FILE --json` reads it
    started = time.monotonic()
    result = reaper.lab("parse", "auto", str(path), "--json", timeout=300)
    seconds = time.monotonic() - started
    measure(f"lab parse auto ({name}{', cut' if cut else ''}, "
            f"{path.stat().st_size >> 20} MB)", seconds)
    # THEN it finishes well within the bound, with the verdict and stop of the real one
    assert result.returncode == 0, result.stderr[-2000:]
    assert seconds < BOUND_S, f"{seconds:.1f} s: not linear"
    document = json.loads(result.stdout)
    assert document["parsed"]["kind"] == plain["parsed"]["kind"]
    assert document["verdict"] == plain["verdict"]
    assert document["debugger"]["signal"] == plain["debugger"]["signal"]


# The regex split_frame_text replaced: polynomial backtracking on long frames.
_OLD_FRAME_TEXT = re.compile(
    r"^(?:(?P<pc>0x[0-9a-fA-F]+) in )?(?P<function>.+?)(?: \((?P<args>.*)\))?"
    r"(?: at (?P<file>.+):(?P<line>\d+))?(?: from (?P<library>.+))?$"
)
_FRAME_TOKENS = ["f", "a", " ", " (", ")", "(", " at ", " from ", ":", "1", "12", "x.c",
                 "0x1 in ", "0x1f", " in ", "=", ","]


def test_the_frame_splitter_agrees_with_the_regex_it_replaced():
    # GIVEN 50,000 random short frame texts made of the pieces the regex looks for
    rnd = random.Random(20240611)
    for _ in range(50_000):
        text = "".join(rnd.choice(_FRAME_TOKENS) for _ in range(rnd.randrange(1, 12))).strip()
        # WHEN both split it THEN they agree on every part
        match = _OLD_FRAME_TEXT.match(text)
        want = match and (match["pc"], match["function"], match["args"], match["file"],
                          match["line"], match["library"])
        assert split_frame_text(text) == want, text


def test_a_long_frame_splits_in_linear_time(measure):
    # GIVEN a 1 MB frame text full of the separators the old regex backtracked over
    text = "0x1 in f" + " (a) at b:1 from c x" * 50_000
    # WHEN it is split THEN it takes well under a second
    started = time.monotonic()
    split = split_frame_text(text)
    seconds = time.monotonic() - started
    measure("split_frame_text, 1 MB frame", seconds)
    assert split[:2] == ("0x1", "f") and split[5] == "c x" and seconds < 2.0


def test_the_library_finder_answers_as_the_scan_does(measure):
    # GIVEN loaded ranges, some of them overlapping, and pcs inside, between and outside them
    rnd = random.Random(7)
    libraries = []
    for index in range(300):
        start = rnd.randrange(0, 10_000)
        libraries.append((start, start + rnd.randrange(0, 400), f"lib{index}.so"))
    pcs = [hex(rnd.randrange(-10, 10_500)) for _ in range(3_000)] + [None, "??", "0x"]
    # WHEN both look every pc up THEN they agree (the first-listed range holding it wins)
    find = library_finder(libraries)
    assert [find(pc) for pc in pcs] == [library_at(pc, libraries) for pc in pcs]
    # AND 100,000 ranges and pcs take well under the time of one scan per pc
    many = [(i * 16, i * 16 + 8, f"lib{i}.so") for i in range(100_000)]
    started = time.monotonic()
    find = library_finder(many)
    found = [find(hex(i * 16 + 4)) for i in range(100_000)]
    measure("library_finder, 100,000 ranges and pcs", time.monotonic() - started)
    assert found[-1] == "lib99999.so" and time.monotonic() - started < 10.0


@pytest.mark.parametrize("line", [
    pytest.param('~"' + "a" * 200_000 + '"', id="console string without escapes"),
    pytest.param("^done,a=[" + "[" * 100_000, id="unclosed lists"),
    pytest.param("^done,a=" + "{b=" * 100_000, id="deep tuples"),
    pytest.param("^done,abc", id="key without value"),
    pytest.param('^done,a="' + "\\" * 100_001, id="unclosed string of backslashes"),
])
def test_an_mi_record_is_read_in_linear_time_and_never_raises(line, measure):
    # GIVEN a record pygdbmi loops on, raises on, or takes quadratic time over
    # WHEN it is read THEN a record comes back, quickly
    started = time.monotonic()
    record = parse_record(line)
    measure(f"parse_record, {len(line) >> 10} KB", time.monotonic() - started)
    assert record["type"] in ("result", "console") and time.monotonic() - started < 2.0


def test_the_live_gdb_driver_reads_a_long_record_in_many_chunks(measure):
    # GIVEN a 4 MB console record as gdb's pipe delivers it: 4 KB at a time, then a prompt
    from lab.debuggers.gdb import _Records

    raw = b'~"' + b"ab.1" * (1 << 20) + b'\\n"\n(gdb) \n'
    records = _Records()
    started = time.monotonic()
    # WHEN the driver's reader takes the chunks
    got = [r for i in range(0, len(raw), 4096) for r in records(raw[i:i + 4096], "stdout")]
    measure("live gdb driver, a 4 MB record in 4 KB chunks", time.monotonic() - started)
    # THEN it is one console record holding the whole string; the prompt is no record
    assert [(r["type"], r["stream"]) for r in got] == [("console", "stdout")]
    assert got[0]["payload"] == "ab.1" * (1 << 20) + "\n"
