"""The LLDB and GDB console parsers, offline, on transcripts in tests/data/.

Captured here by the lab itself (x86_64 Linux): lldb-trap-x86_64.txt and gdb-trap-x86_64.txt
(the breakpoint-trap scenario caught by scripts/lldb_attach_child.py), lldb-chromadb-x86_64.txt
(the ChromaDB child's proven deadlock, interrupted), lldb-lock-x86_64.txt (`lab watch
--debugger lldb`). Hand-built from the shape of real sessions: lldb-arm64-macos-trap.txt and
gdb-aarch64-futex.txt (their header comments say so).
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from conftest import DATA, damaged_copies
from lab.errors import BadInput
from lab.parsers.document import evidence_from_parsed, evidence_from_transcript, parse_text
from lab.parsers.gdb_console import parse_gdb_console
from lab.parsers.lldb import parse_lldb_transcript

LIBDISPATCH = ("BUG IN CLIENT OF LIBDISPATCH: Use-after-free of dispatch_semaphore_t or "
               "dispatch_group_t")
ARM64_REGISTERS = [f"x{i}" for i in range(29)] + ["fp", "lr", "sp", "pc", "cpsr"]
HEX = re.compile(r"^0x[0-9a-f]+$")


def frame_lines_of_last_backtrace(text: str, header: str, frame: str) -> int:
    """How many frame lines the last backtrace listing of ``text`` holds (counted by regex,
    independently of the parser): the parser must keep every one."""
    last = text.rsplit(header, 1)[1]
    return len(re.findall(frame, last.split("\n(", 1)[0], flags=re.MULTILINE))


CASES = [
    pytest.param("lldb", "lldb-arm64-macos-trap.txt", {
        "verdict": "crash", "system": "Darwin", "machine": "arm64", "pid": 51234,
        "stop_reason": "EXC_BREAKPOINT (code=1, subcode=0x19da0660c)", "signal": "SIGTRAP",
        "instruction": "brk #0x1", "message": LIBDISPATCH,
        "frame0": ("libdispatch.dylib", "_dispatch_sema4_wait.cold.1", 32),
    }, id="lldb, arm64 macOS, EXC_BREAKPOINT (hand-built)"),
    pytest.param("lldb", "lldb-trap-x86_64.txt", {
        "verdict": "crash", "system": "Linux", "machine": "x86_64",
        "stop_reason": "signal SIGTRAP", "signal": "SIGTRAP", "instruction": "int3",
        "message": None, "frame0": ("libbreakpoint_trap.so", "lab_breakpoint_trap", None),
    }, id="lldb, x86_64 Linux, int3 trap (captured)"),
    pytest.param("lldb", "lldb-chromadb-x86_64.txt", {
        "verdict": "deadlock", "system": "Linux", "machine": "x86_64",
        "stop_reason": "signal SIGINT", "signal": "SIGINT", "instruction": "syscall",
        "message": None, "frame0": ("libc.so.6", "syscall", None),
    }, id="lldb, x86_64 Linux, ChromaDB deadlock interrupted (captured)"),
    # One snapshot of an untimed futex wait is no proof: no verdict, the detail says so (the
    # chromadb transcript above carries the lab's note of its proof from /proc, this one not).
    pytest.param("lldb", "lldb-lock-x86_64.txt", {
        "verdict": None, "detail": "not a proof", "system": "Linux", "machine": "x86_64",
        "stop_reason": "signal SIGSTOP", "signal": "SIGSTOP", "instruction": "syscall",
        "message": None, "frame0": ("libc.so.6", "__futex_abstimed_wait_common", None),
    }, id="lldb, x86_64 Linux, attach to a held lock (captured)"),
    pytest.param("gdb", "gdb-trap-x86_64.txt", {
        "verdict": "crash", "system": "Linux", "machine": "x86_64",
        "stop_reason": "signal SIGTRAP, Trace/breakpoint trap", "signal": "SIGTRAP",
        "instruction": "int3", "message": None, "frame0": (None, "lab_breakpoint_trap", None),
    }, id="gdb console, x86_64 Linux, int3 trap (captured)"),
    pytest.param("gdb", "gdb-aarch64-futex.txt", {
        "verdict": None, "detail": "not a proof", "system": "Linux", "machine": "aarch64",
        "pid": 4286,
        "stop_reason": "attached", "signal": None, "instruction": "svc #0x0", "message": None,
        "frame0": ("/lib/aarch64-linux-gnu/libc.so.6", "syscall", None),
    }, id="gdb console, aarch64 Linux, futex deadlock (hand-built)"),
    pytest.param("gdb", "gdb-chromadb-x86_64.txt", {
        "verdict": None, "detail": "not a proof", "system": "Linux", "machine": "x86_64",
        "stop_reason": "attached", "signal": None, "instruction": "syscall",
        "message": "Python frames from /root/.pyenv/versions/3.11.7/bin/python3.11-gdb.py",
        "frame0": ("/lib/x86_64-linux-gnu/libc.so.6", "syscall", 25),
    }, id="gdb MI, x86_64 Linux, ChromaDB deadlock (the GDB driver's transcript)"),
]


@pytest.mark.parametrize(("debugger", "name", "want"), CASES)
def test_transcript_gives_the_evidence_document(debugger, name, want):
    # GIVEN a transcript WHEN it is read as an evidence document
    evidence = evidence_from_transcript(debugger, DATA / name)
    dbg = evidence.debugger
    # THEN the verdict, platform and stop are what the transcript shows
    assert evidence.verdict == want["verdict"]
    assert (evidence.platform.system, evidence.platform.machine) == (want["system"],
                                                                     want["machine"])
    assert dbg.name == debugger and dbg.transcript == name
    for key in ("stop_reason", "signal", "instruction", "message"):
        assert getattr(dbg, key) == want[key], key
    if "pid" in want:
        assert dbg.pid == want["pid"]
    # AND the stopped thread's frame 0 is named, with its library
    library, function, offset = want["frame0"]
    frame0 = dbg.threads[0].frames[0]
    assert (frame0.index, frame0.function, frame0.offset) == (0, function, offset)
    if library:
        assert frame0.library == library
    assert frame0.pc and HEX.match(frame0.pc.lower())
    # AND every register shown is kept, as a hex string; the process record carries the verdict
    assert dbg.registers and all(HEX.match(v) for v in dbg.registers.values())
    record = evidence.processes[0]
    assert record.pid == dbg.pid and record.verdict == want["verdict"]
    assert want.get("detail", "") in record.detail
    assert evidence.schema == "lab-evidence/1" and evidence.complete


@pytest.mark.parametrize(("name", "header", "frame"), [
    ("lldb-arm64-macos-trap.txt", "(lldb) bt all", r"^\s+(?:\* )?frame #\d+: "),
    ("lldb-trap-x86_64.txt", "(lldb) thread backtrace all", r"^\s+(?:\* )?frame #\d+: "),
    ("lldb-chromadb-x86_64.txt", "(lldb) thread backtrace all", r"^\s+(?:\* )?frame #\d+: "),
], ids=["macos-trap", "linux-trap", "linux-chromadb"])
def test_lldb_keeps_every_frame_and_unnamed_symbols(name, header, frame):
    # GIVEN an LLDB transcript with a `bt all`
    text = (DATA / name).read_text()
    # WHEN it is parsed
    info = parse_lldb_transcript(text)
    frames = info.threads[0].frames
    # THEN no frame is dropped, indices run 0..n-1, and stripped Rust frames keep their
    # ___lldb_unnamed_symbol name, library and offset
    assert len(frames) == frame_lines_of_last_backtrace(text, header, frame)
    assert [f.index for f in frames] == list(range(len(frames)))
    if "trap" not in name or "macos" in name:
        rust = [f for f in frames if f.library == "chromadb_rust_bindings.abi3.so"]
        assert rust and all(f.function.startswith("___lldb_unnamed_symbol") for f in rust)
        assert all(f.offset is not None and f.offset > 0 for f in rust)


def test_macos_arm64_trap_registers_and_thread():
    # GIVEN the hand-built macOS session WHEN parsed
    info = parse_lldb_transcript((DATA / "lldb-arm64-macos-trap.txt").read_text())
    # THEN the arm64 register layout is complete, pc is the trap's address (the subcode)
    assert list(info.registers) == ARM64_REGISTERS
    assert int(info.registers["pc"], 16) == 0x19da0660c
    assert info.registers["x0"] == "0x000000000000000f"  # KERN_INVALID_NAME: the lost port
    # AND the thread carries its tid from `thread list` (hex on macOS) and the dyld frame
    thread = info.threads[0]
    assert thread.tid == 0x2F4A1B
    assert (thread.frames[-1].library, thread.frames[-1].function) == ("dyld", "start")


def test_gdb_aarch64_register_dump_decodes_the_futex_wait():
    # GIVEN the hand-built aarch64 GDB session (x8 = 98, x1 = 0x89, x3 = 0)
    evidence = evidence_from_transcript("gdb", DATA / "gdb-aarch64-futex.txt")
    # WHEN its stopped thread is decoded
    call = evidence.processes[0].threads[0].syscall
    # THEN it is futex(2) by the generic syscall table, a private wait with no timeout
    assert (call.nr, call.name) == (98, "futex")
    assert call.futex.op == "FUTEX_WAIT_BITSET_PRIVATE" and call.futex.timeout is None
    assert call.futex.val == 0x9D
    # AND uaddr is not made up: x0 already holds -ERESTARTSYS, the interrupted call's result
    assert call.futex.uaddr is None
    assert evidence.debugger.registers["x8"] == "0x62"
    assert len(evidence.debugger.threads[0].frames) == 29


def test_gdb_console_frames_without_pc_and_from_library():
    # GIVEN the captured gdb console transcript WHEN parsed
    info = parse_gdb_console((DATA / "gdb-trap-x86_64.txt").read_text())
    frames = info.threads[0].frames
    # THEN frame 0 (gdb omits its pc at a line start) takes rip; inlined frames keep no pc
    assert frames[0].pc == info.registers["rip"]
    assert frames[1].function == "??" and frames[1].library.endswith("libffi.so.8")
    assert any(f.pc is None and f.function for f in frames[1:])  # an inlined frame
    assert info.registers["orig_rax"]  # `info registers general system`
    assert info.version.startswith("GNU gdb") and info.threads[0].tid == info.pid


def test_lab_notes_decide_the_x86_64_lldb_verdict():
    # GIVEN the ChromaDB deadlock caught with lldb, whose innermost frame is libc's generic
    # syscall() wrapper: x86_64 lldb shows no orig_rax, so the number is in the lab's note
    text = (DATA / "lldb-chromadb-x86_64.txt").read_text()
    with_notes = parse_text("lldb", text, "with-notes.txt")
    without = parse_text("lldb", "\n".join(
        line for line in text.splitlines() if not line.startswith("# lab ")), "pasted.txt")
    from lab.parsers.document import judge

    # THEN with the note it is a deadlock; without it the lab will not guess a verdict
    assert judge(with_notes)[0] == "deadlock"
    verdict, detail, _thread = judge(without)
    assert verdict is None and "no futex wait" in detail


def test_lldb_futex_frame_decodes_without_notes():
    # GIVEN an lldb x86_64 attach to a thread in __futex_abstimed_wait_common, notes removed
    text = "\n".join(line for line in (DATA / "lldb-lock-x86_64.txt").read_text().splitlines()
                     if not line.startswith("# lab "))
    from lab.parsers.document import judge

    # WHEN judged THEN rax = -ERESTARTSYS after `syscall` in a futex frame decodes as futex,
    # an untimed wait: one snapshot of it is consistent with a deadlock, not a proof of one
    verdict, detail, thread = judge(parse_text("lldb", text, "pasted.txt"))
    assert verdict is None and "consistent with a deadlock, not a proof" in detail
    assert thread.syscall.futex.timeout is None and thread.syscall.nr == 202


def test_lldb_transcript_pasted_from_a_terminal_reads_the_same():
    # GIVEN the captured trap transcript as a user would paste it: no lab notes, a shell
    # around it, the program's output in the middle, Windows line endings
    text = (DATA / "lldb-trap-x86_64.txt").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("# lab ")]
    cut = next(i for i, line in enumerate(lines) if line.startswith("(lldb) process continue"))
    pasted = "\r\n".join(
        ["me@box:~/lab$ sudo lldb -p 4242", "Password:", *lines[: cut + 1],
         "child 4242: executing the breakpoint instruction", "some unrelated log line",
         *lines[cut + 1:], "(lldb) quit", "me@box:~/lab$ echo done", "done"])
    # WHEN both are parsed THEN the stacks, stop, instruction and registers are identical
    original, copy = parse_lldb_transcript(text), parse_lldb_transcript(pasted)
    assert copy.threads == original.threads
    assert (copy.stop_reason, copy.signal, copy.instruction) == (
        original.stop_reason, original.signal, original.instruction)
    assert copy.registers == original.registers and copy.pid == original.pid


def test_parse_command_prints_the_document(reaper):
    # GIVEN the macOS transcript WHEN `python -m lab parse lldb FILE --json` runs
    result = reaper.lab("parse", "lldb", str(DATA / "lldb-arm64-macos-trap.txt"), "--json",
                        timeout=60)
    # THEN it exits 0 with the evidence document on stdout
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["verdict"] == "crash" and document["debugger"]["signal"] == "SIGTRAP"
    assert document["platform"]["system"] == "Darwin"


def _bad_inputs(tmp_path):
    trap = (DATA / "lldb-trap-x86_64.txt").read_text()
    truncated = trap[: trap.rindex("Process ", 0, trap.index("stop reason = signal SIGTRAP"))]
    gdb_trap = (DATA / "gdb-trap-x86_64.txt").read_text()
    files = {
        "empty": ("lldb", ""),
        "blank": ("lldb", "\n   \n"),
        "binary": ("lldb", bytes(range(256)) * 4),
        "truncated lldb": ("lldb", truncated),
        "truncated gdb": ("gdb", gdb_trap.split("Program received signal", 1)[0]),
        "gdb transcript to lldb": ("lldb", (DATA / "gdb-trap-x86_64.txt").read_text()),
        "lldb transcript to gdb": ("gdb", trap),
        "MI transcript to lldb": ("lldb", (DATA / "gdb-lock-x86_64.txt").read_text()),
        "not a transcript": ("gdb", "hello\nworld\n"),
    }
    cases = []
    for label, (debugger, content) in files.items():
        path = tmp_path / (label.replace(" ", "-") + ".txt")
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        cases.append((label, debugger, str(path)))
    cases.append(("missing file", "lldb", str(tmp_path / "nope.txt")))
    cases.append(("a directory", "gdb", str(tmp_path)))
    return cases


def test_bad_transcripts_are_one_line_errors(reaper, tmp_path):
    # GIVEN transcripts that are empty, binary, truncated, from the other debugger, or absent
    for label, debugger, path in _bad_inputs(tmp_path):
        # WHEN `python -m lab parse` reads each
        result = reaper.lab("parse", debugger, path, "--json", timeout=60)
        # THEN it exits 2 with one line on stderr, no traceback and nothing on stdout
        assert result.returncode == 2, (label, result.returncode, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("lab: error: "), label
        assert "Traceback" not in result.stderr and result.stdout == "", label


@pytest.mark.parametrize(("debugger", "name", "needle"), [
    ("lldb", "gdb-trap-x86_64.txt", "is a GDB transcript"),
    ("gdb", "lldb-trap-x86_64.txt", "is an LLDB transcript"),
])
def test_wrong_debugger_says_which_parser_to_use(debugger, name, needle):
    with pytest.raises(BadInput) as caught:
        evidence_from_transcript(debugger, DATA / name)
    other = "gdb" if debugger == "lldb" else "lldb"
    assert needle in str(caught.value) and f"parse {other}" in caught.value.line()


@pytest.mark.parametrize(("cut", "error"), [
    ("Process 25524 stopped\n* thread #1, name = 'python', stop reason = signal SIGINT",
     "ends while the process runs"),
    ("Process 25524 stopped\n* thread #1, name = 'python', stop reason = signal SIGSTOP",
     "no stack frame"),
], ids=["after continue", "during the attach"])
def test_truncated_transcript_is_bad_input(tmp_path, cut, error):
    # GIVEN the captured chromadb transcript cut before its stop, or during the attach
    text = (DATA / "lldb-chromadb-x86_64.txt").read_text()
    assert cut in text
    path = tmp_path / "cut.txt"
    path.write_text(text.split(cut, 1)[0])
    # WHEN parsed THEN the one-line error says why it is unusable
    with pytest.raises(BadInput, match=error):
        evidence_from_transcript("lldb", path)


def test_terminal_colours_do_not_change_the_result():
    # GIVEN the macOS transcript as script(1) saves a coloured terminal: escapes around words
    text = (DATA / "lldb-arm64-macos-trap.txt").read_text()
    coloured = text.replace("frame #", "\x1b[33mframe #\x1b[0m").replace(
        "stop reason = ", "stop reason = \x1b[1;31m")
    # WHEN both are parsed THEN they agree
    assert parse_lldb_transcript(coloured) == parse_lldb_transcript(text)


@pytest.mark.parametrize("name", ["lldb-trap-x86_64.txt", "lldb-arm64-macos-trap.txt",
                                  "gdb-trap-x86_64.txt", "gdb-aarch64-futex.txt"])
def test_damaged_transcripts_give_a_document_or_bad_input(name):
    # GIVEN a transcript damaged at random (seeded: the same cases every run): cut anywhere,
    # lines dropped or duplicated
    text = (DATA / name).read_text()
    for cut in damaged_copies(text, name, 60, 8):
        # WHEN each parser reads it THEN it returns evidence or raises BadInput, nothing else
        for debugger in ("gdb", "lldb"):
            try:
                evidence_from_parsed(parse_text(debugger, cut, name), name)
            except BadInput:
                pass


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_parsers_are_pure_functions_of_the_text():
    # GIVEN the same text parsed twice THEN the results are equal (no state leaks between calls)
    text = (DATA / "lldb-arm64-macos-trap.txt").read_text()
    assert parse_lldb_transcript(text) == parse_lldb_transcript(text)
