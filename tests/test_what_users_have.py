"""`lab parse` on what a reporter already has: any GDB or LLDB paste, a macOS crash report, py-spy.

Offline, on tests/data/ (its README says which files were captured here and which are
hand-built). Each kind is read by `auto` and by its own name; the verdict is what one snapshot
supports; the fork is named only where the text shows it.
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import DATA, damaged_copies
from lab.errors import BadInput
from lab.parsers.document import (
    evidence_from_parsed,
    evidence_from_transcript,
    parse_text,
    read_text,
)
from lab.parsers.transcript import clean_lines, unpaged
from lab.parsers.waits import SNAPSHOT

GDB_PAGERS = ("--Type <RET> for more, q to quit, c to continue without paging--",
              "---Type <return> to continue, or q <return> to quit---")
LIBDISPATCH = "BUG IN CLIENT OF LIBDISPATCH: Use-after-free of dispatch_semaphore_t or " \
              "dispatch_group_t"

# file -> (kind, verdict, all threads in untimed waits, fork shown, scenario, threads, frames of
# the first thread)
CASES = [
    pytest.param("gdb-tty-lock-x86_64.txt", "gdb", None, True, False, None, 1, 29,
                 id="gdb terminal: pager, wrapping, info threads, bt, bt full, py-bt (captured)"),
    pytest.param("gdb-batch-atfork-x86_64.txt", "gdb", None, True, True, "python-lock-held", 1,
                 38, id="gdb batch: thread apply all bt + py-bt, inside os.fork() (captured)"),
    pytest.param("gdb-batch-pool-parent-x86_64.txt", "gdb", None, False, False, None, 5, 8,
                 id="gdb batch: five threads, futex + poll + read (captured)"),
    pytest.param("lldb-atfork-x86_64.txt", "lldb", None, True, True, "python-lock-held", 1, 34,
                 id="lldb 14, inside os.fork() (captured)"),
    pytest.param("lldb-oldformat-lock-x86_64.txt", "lldb", None, True, False, None, 1, 26,
                 id="lldb, the older thread #N: tid = format (captured)"),
    pytest.param("lldb-oldformat-sigabrt-handbuilt.txt", "lldb", "crash", False, True, None, 1,
                 17, id="lldb before 4.0, SIGABRT in os.fork() (hand-built)"),
    pytest.param("lldb-xcode-arm64-badaccess-handbuilt.txt", "lldb", "crash", False, False, None,
                 2, 11, id="Xcode's lldb, queues, EXC_BAD_ACCESS (hand-built)"),
    pytest.param("crash-translated-arm64-libdispatch-handbuilt.txt", "crash", "crash", False,
                 True, "chromadb-tokio", 1, 23, id="macOS 14 Translated Report (hand-built)"),
    pytest.param("crash-ips-arm64-libdispatch-handbuilt.ips", "crash", "crash", False, True,
                 "chromadb-tokio", 1, 23, id="macOS 14 .ips JSON (hand-built)"),
    pytest.param("crash-ips-arm64-unfair-lock-handbuilt.ips", "crash", "crash", False, True,
                 "tokenizers", 2, 9, id="macOS 13 .ips, os_unfair_lock corrupt (hand-built)"),
    pytest.param("crash-legacy-x86_64-objc-fork-handbuilt.crash", "crash", "crash", False, True,
                 None, 2, 28, id="macOS 11 legacy .crash, objc fork safety (hand-built)"),
    pytest.param("pyspy-pool-worker.txt", "py-spy", None, False, True, None, 1, 0,
                 id="py-spy dump text, pool worker (captured)"),
    pytest.param("pyspy-pool-worker.json", "py-spy", None, False, True, None, 1, 0,
                 id="py-spy dump --json, pool worker (captured)"),
    pytest.param("pyspy-pool-parent-locals.txt", "py-spy", None, False, False, None, 5, 0,
                 id="py-spy dump --locals, five threads (captured)"),
    pytest.param("pyspy-atfork-native.txt", "py-spy", None, False, True, "python-lock-held", 1, 6,
                 id="py-spy dump --native, inside os.fork() (captured)"),
]


@pytest.mark.parametrize(("name", "kind", "verdict", "untimed", "fork", "scenario", "threads",
                          "frames"), CASES)
def test_auto_reads_each_kind(name, kind, verdict, untimed, fork, scenario, threads, frames):
    # GIVEN a file of one kind WHEN `auto` reads it
    evidence = evidence_from_transcript("auto", DATA / name)
    found = evidence.parsed
    # THEN it is told for what it is, and reads the same as when its kind is named
    assert found["kind"] == kind
    assert evidence.to_dict() == evidence_from_transcript(kind, DATA / name).to_dict()
    # AND the verdict is what one snapshot supports: crash where it crashed, never deadlock
    assert evidence.verdict == verdict and evidence.schema == "lab-evidence/1"
    assert found["all_untimed"] is untimed
    if untimed:
        assert found["snapshot"].startswith(SNAPSHOT)
        assert evidence.processes[0].detail.startswith(SNAPSHOT)
    # AND the fork is named only where the text shows it, with the catalog's scenario
    assert found["fork"]["shown"] is fork
    assert found["fork"].get("scenario") == scenario
    if scenario:
        fixes = found["fork"]["fixes"]
        assert fixes and all(fix["fix"] and fix["measured"] for fix in fixes)
    # AND every thread and frame is kept, each frame indexed in order
    dbg = evidence.debugger
    assert len(dbg.threads) == threads and len(dbg.threads[0].frames) == frames
    for thread in dbg.threads:
        assert [f.index for f in thread.frames] == list(range(len(thread.frames)))
    json.loads(evidence.to_json())


def test_gdb_terminal_session_reads_through_pager_and_wrapping():
    # GIVEN the captured terminal session: frames wrapped at 80 columns, three pager prompts
    # (one cutting a string in two), `bt full 3` with its locals, py-bt and py-bt-full
    parsed = parse_text("gdb", read_text(DATA / "gdb-tty-lock-x86_64.txt"), "tty.txt")
    thread = parsed.info.threads[0]
    # THEN `bt`, `bt full` and `info threads` give one thread: the selected one, LWP 8483
    assert (thread.tid, thread.name, parsed.info.pid) == (8483, "python", 8483)
    # AND every frame reads whole: file and line of each (but _start), wrapped or paged
    assert all(f.file and f.line for f in thread.frames[:-1]), [
        f for f in thread.frames if not f.line]
    assert thread.frames[8].function == "method_vectorcall_VARARGS_KEYWORDS"
    assert (thread.frames[8].file, thread.frames[8].line) == ("Objects/descrobject.c", 364)
    assert "'__file__'" in parsed.args[0][13]  # the string the pager cut in two, glued
    # AND the locals of `bt full` are no part of a frame; the arguments are kept for the wait
    assert "err = -512" not in " ".join(parsed.args[0].values())
    assert "abstime=abstime@entry=0x0" in parsed.args[0][0]
    # AND py-bt-full's listing (the later one) is the thread's Python stack
    assert [(f.function, f.line) for f in thread.python_frames] == [("<module>", 10)]


def test_pager_prompts_are_taken_out():
    # GIVEN an old GDB's prompt cutting a frame, a new one on its own line, one answered "c"
    lines = ["#10 0x1 in __libc_start_main (main=0x1, argc=1, "
             "---Type <return> to continue, or q <return> to quit---",
             "argv=0x7ffd) at ../csu/libc-start.c:291",
             "--Type <RET> for more, q to quit, c to continue without paging--",
             "#11 0x2 in _start ()",
             "--Type <RET> for more, q to quit, c to continue without paging--c",
             "(gdb) "]
    # WHEN they are unpaged THEN the cut frame is whole again and the prompts are gone
    assert list(unpaged(iter(lines), GDB_PAGERS)) == [
        "#10 0x1 in __libc_start_main (main=0x1, argc=1, argv=0x7ffd) at "
        "../csu/libc-start.c:291", "#11 0x2 in _start ()", "(gdb) "]


def test_carriage_returns_show_what_the_terminal_showed():
    # GIVEN a bracketed-paste code, then a return to the line's start, then the output
    text = "a\r\n\x1b[?2004l\r    nargsf=1)\r\nno newline\r"
    # WHEN cleaned THEN the text written last on each line is kept
    assert list(clean_lines(text)) == ["a", "    nargsf=1)", "no newline"]


@pytest.mark.parametrize(("piece", "kind", "want"), [
    ("bt", "gdb", {"frames": 38, "untimed": True, "fork": True}),
    ("py-bt", "gdb", {"frames": 0, "python": 4, "fork": True}),
    ("info threads", "gdb", {"frames": 1, "untimed": True, "fork": False}),
], ids=["a plain bt alone", "py-bt alone", "info threads alone"])
def test_a_piece_of_a_gdb_session_reads_alone(tmp_path, piece, kind, want):
    # GIVEN one command's output cut from the captured batch session, pasted without prompt
    text = read_text(DATA / "gdb-batch-atfork-x86_64.txt")
    if piece == "bt":
        part = [line for line in text.splitlines() if re.match(r"#\d+ ", line)][:38]
    elif piece == "py-bt":
        part = text.split("Traceback (most recent call first):", 1)[1].splitlines()[1:7]
        part = ["Traceback (most recent call first):", *part]
    else:
        part = [line for line in text.splitlines() if line.lstrip().startswith(("Id ", "* 1"))]
    path = tmp_path / "piece.txt"
    path.write_text("\n".join(part) + "\n")
    # WHEN `auto` reads it
    evidence = evidence_from_transcript("auto", path)
    thread = evidence.debugger.threads[0]
    # THEN it is a GDB paste, with what that piece holds
    assert evidence.parsed["kind"] == kind and evidence.verdict is None
    assert len(thread.frames) == want["frames"]
    assert len(thread.python_frames) == want.get("python", len(thread.python_frames))
    if "untimed" in want:
        assert evidence.parsed["all_untimed"] is want["untimed"]
    assert evidence.parsed["fork"]["shown"] is want["fork"]


def test_the_wait_is_read_from_arguments_and_names():
    # GIVEN the five threads of the captured pool parent
    evidence = evidence_from_transcript("gdb", DATA / "gdb-batch-pool-parent-x86_64.txt")
    waits = {w["tid"]: w for w in evidence.parsed["waits"]}
    # THEN futex waits are untimed from abstime=0x0, private from op=393 (0x189)
    assert waits[16886]["kind"] == "lock" and waits[16886]["untimed"] is True
    assert waits[16886]["evidence"].startswith("abstime=0x0")
    assert waits[16886]["futex"] == {"op": "FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME",
                                     "private": True}
    # AND poll(timeout=-1) and read() are untimed waits another process can end: no deadlock
    assert (waits[16889]["kind"], waits[16889]["untimed"]) == ("io", True)
    assert (waits[16891]["kind"], waits[16891]["untimed"]) == ("io", True)
    assert evidence.parsed["snapshot"].startswith("3 of 5 threads blocked in untimed lock waits")


def test_lldb_older_format_keeps_frames_files_and_the_stop():
    # GIVEN the hand-built pre-4.0 LLDB SIGABRT (the format an issue thread quoted)
    evidence = evidence_from_transcript("lldb", DATA / "lldb-oldformat-sigabrt-handbuilt.txt")
    dbg = evidence.debugger
    frame0 = dbg.threads[0].frames[0]
    # THEN the header's stop reason, tid and name are read, and frames follow it
    assert (dbg.stop_reason, dbg.signal, dbg.threads[0].tid) == ("signal SIGABRT", "SIGABRT",
                                                                 18364)
    assert (frame0.function, frame0.offset, frame0.file, frame0.line) == ("__GI_raise", 56,
                                                                          "raise.c", 54)
    assert evidence.parsed["format"].startswith("LLDB (older format")
    assert evidence.platform.system == "Linux"


def test_xcode_lldb_keeps_queues_and_the_exception():
    evidence = evidence_from_transcript("auto", DATA / "lldb-xcode-arm64-badaccess-handbuilt.txt")
    dbg = evidence.debugger
    assert dbg.stop_reason == "EXC_BAD_ACCESS (code=1, address=0x10)" and dbg.signal == "SIGSEGV"
    assert evidence.parsed["facts"]["queues"] == {"434929": "com.apple.main-thread",
                                                  "434949": "com.apple.root.default-qos"}
    assert evidence.parsed["facts"]["exception"] == {"type": "EXC_BAD_ACCESS", "code": "1",
                                                     "address": "0x10"}
    assert evidence.platform.system == "Darwin" and dbg.threads[0].tid == 0x6A2F1


def test_ips_and_text_of_one_incident_agree():
    # GIVEN the same macOS 14 crash as a Translated Report and as its .ips
    text = evidence_from_transcript("crash", DATA / "crash-translated-arm64-libdispatch-handbuilt"
                                                   ".txt")
    ips = evidence_from_transcript("crash", DATA / "crash-ips-arm64-libdispatch-handbuilt.ips")
    # THEN they give the same process, stop, message, registers and frames
    for evidence in (text, ips):
        report = evidence.parsed["report"]
        assert (report["process"], report["pid"], report["parent_pid"]) == ("Python", 51234, 51200)
        assert report["os_version"] == "macOS 14.5 (23F79)"
        assert report["termination_reason"] == "Namespace SIGNAL, Code 5 Trace/BPT trap: 5"
        assert evidence.debugger.message.startswith(LIBDISPATCH)
        assert evidence.debugger.signal == "SIGTRAP"
        assert (evidence.platform.system, evidence.platform.machine) == ("Darwin", "arm64")
        assert evidence.processes[0].ppid == 51200
    assert {k: int(v, 16) for k, v in text.debugger.registers.items()} == {
        k: int(v, 16) for k, v in ips.debugger.registers.items()}
    pairs = zip(text.debugger.threads[0].frames, ips.debugger.threads[0].frames, strict=True)
    for one, other in pairs:
        assert (int(one.pc, 16), one.library) == (int(other.pc, 16), other.library)
    assert text.debugger.threads[0].frames[0].function == "_dispatch_sema4_wait.cold.1"


def test_crash_report_fork_messages_are_signs():
    evidence = evidence_from_transcript("auto", DATA / "crash-legacy-x86_64-objc-fork-handbuilt"
                                                       ".crash")
    signs = [sign["sign"] for sign in evidence.parsed["fork"]["signs"]]
    assert '"*** multi-threaded process forked ***"' in signs
    assert '"crashed on child side of fork pre-exec"' in signs
    assert "parent process Python [20398]" in signs
    assert any("performForkChildInitialize" in sign for sign in signs)
    assert evidence.debugger.registers["rip"] == "0x00007fff2030e92e"
    assert evidence.debugger.threads[0].frames[3].function.startswith("_objc_fatalv(")


def _pieces():
    text = read_text(DATA / "crash-translated-arm64-libdispatch-handbuilt.txt")
    ips = read_text(DATA / "crash-ips-arm64-libdispatch-handbuilt.ips")
    frames = text[text.index("Thread 0 Crashed::"):text.index("Thread 0 crashed with")]
    return {
        "text header only": (text[:text.index("Thread 0 Crashed::")], "crash", 0),
        "crashed thread only": (frames, "crash", 1),
        "frames only, no thread line": (frames.split("\n", 1)[1], None, 1),
        ".ips header line only": (ips.split("\n", 1)[0], None, 0),
        ".ips cut in the middle": (ips[: len(ips) * 2 // 3], "crash", 0),
    }


@pytest.mark.parametrize("piece", list(_pieces()))
def test_a_partial_crash_report_gives_what_it_holds(tmp_path, piece):
    # GIVEN a piece of a report, as a user pastes it
    content, verdict, threads = _pieces()[piece]
    path = tmp_path / "piece.txt"
    path.write_text(content)
    # WHEN `auto` reads it THEN it is a crash report with what the piece holds, and no more
    evidence = evidence_from_transcript("auto", path)
    report = evidence.parsed["report"]
    assert evidence.parsed["kind"] == "crash" and evidence.verdict == verdict
    assert len(evidence.debugger.threads) == threads
    if "header" in piece or "middle" in piece:
        assert report["process"] == "Python"
        assert "macOS 14.5" in report["os_version"]
    if threads:
        assert evidence.debugger.threads[0].frames[0].function == "_dispatch_sema4_wait.cold.1"


def test_pyspy_text_and_json_agree():
    text = evidence_from_transcript("py-spy", DATA / "pyspy-pool-worker.txt")
    data = evidence_from_transcript("py-spy", DATA / "pyspy-pool-worker.json")
    for evidence in (text, data):
        (thread,) = evidence.debugger.threads
        assert (thread.tid, thread.name, thread.python_source) == (16888, "MainThread", "py-spy")
        assert evidence.python_stacks[0]["threads"][0]["active"] is False
        assert evidence.parsed["fork"]["signs"][0]["means"].startswith("a multiprocessing child")
    assert [(f.function, f.line) for f in text.debugger.threads[0].python_frames] == [
        (f.function, f.line) for f in data.debugger.threads[0].python_frames]
    assert text.platform.python == "3.11.7" and text.processes[0].argv[0].endswith("python")


def test_pyspy_locals_show_untimed_python_waits():
    evidence = evidence_from_transcript("auto", DATA / "pyspy-pool-parent-locals.txt")
    waits = {w["name"]: w for w in evidence.parsed["waits"]}
    assert (waits["holder"]["kind"], waits["holder"]["untimed"]) == ("lock", True)
    assert waits["holder"]["evidence"].startswith("timeout=None in Python's Condition.wait")
    assert waits["Thread-1 (_handle_workers)"]["kind"] == "io"


@pytest.mark.parametrize(("kind", "name", "said"), [
    ("crash", "gdb-batch-atfork-x86_64.txt", "is a GDB transcript, not a macOS crash report"),
    ("py-spy", "lldb-atfork-x86_64.txt", "is an LLDB transcript, not a py-spy dump"),
    ("gdb", "crash-ips-arm64-libdispatch-handbuilt.ips", "is a macOS crash report, not a GDB"),
    ("lldb", "pyspy-pool-worker.txt", "is a py-spy dump, not an LLDB transcript"),
])
def test_a_named_kind_that_is_wrong_says_which_it_is(kind, name, said):
    with pytest.raises(BadInput) as caught:
        evidence_from_transcript(kind, DATA / name)
    assert said in str(caught.value) and "python -m lab parse " in caught.value.line()


def test_unknown_text_is_refused_in_one_line(reaper, tmp_path):
    # GIVEN text that is no debugger session, report or dump
    path = tmp_path / "notes.txt"
    path.write_text("the worker hangs after fork, see attached\nthanks\n")
    # WHEN `lab parse auto` reads it THEN one line on stderr, exit 2, nothing on stdout
    result = reaper.lab("parse", "auto", str(path), "--json", timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "is not a debugger transcript, crash report or py-spy dump" in result.stderr


@pytest.mark.parametrize("name", ["crash-ips-arm64-unfair-lock-handbuilt.ips",
                                  "gdb-batch-atfork-x86_64.txt", "pyspy-pool-worker.json"])
def test_parse_auto_prints_markdown_and_json(reaper, name):
    # GIVEN a file WHEN `lab parse auto FILE` runs, with and without --json
    markdown = reaper.lab("parse", "auto", str(DATA / name), timeout=60)
    document = reaper.lab("parse", "auto", str(DATA / name), "--json", timeout=60)
    # THEN both exit 0; the JSON is the evidence document, the Markdown says what was read
    assert markdown.returncode == 0 and document.returncode == 0, markdown.stderr
    parsed = json.loads(document.stdout)["parsed"]
    assert f"# {name}: " in markdown.stdout and "## The fork" in markdown.stdout
    assert parsed["format"] in markdown.stdout.replace("\\", "")
    if parsed["fork"].get("scenario"):
        assert f"python -m lab run {parsed['fork']['scenario']}" in markdown.stdout


@pytest.mark.parametrize("name", ["crash-ips-arm64-unfair-lock-handbuilt.ips",
                                  "crash-legacy-x86_64-objc-fork-handbuilt.crash",
                                  "pyspy-pool-parent-locals.txt", "gdb-tty-lock-x86_64.txt",
                                  "lldb-oldformat-lock-x86_64.txt"])
def test_damaged_files_give_a_document_or_bad_input(name):
    # GIVEN a file cut anywhere, lines dropped or repeated (seeded: the same cases every run)
    text = read_text(DATA / name)
    for cut in damaged_copies(text, name, 40, 6):
        # WHEN every kind reads it THEN it gives evidence or BadInput, nothing else
        for kind in ("auto", "gdb", "lldb", "crash", "py-spy"):
            try:
                evidence_from_parsed(parse_text(kind, cut, name), name, cut).to_json()
            except BadInput:
                pass
