"""Offline tests of the gdb parsers: MI records, py-bt text, whole recorded gdb.txt transcripts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pygdbmi.gdbmiparser import parse_response

from lab.debuggers.pyext import extension_candidates, libpython_from_maps, python_version
from lab.evidence import Frame, PythonFrame
from lab.parsers.gdb_mi import (
    SymbolInfo,
    apply_symbol,
    blocking_instruction,
    console_command,
    console_command_of,
    frames_from_stack,
    lwp_from_target_id,
    parse_gdb_transcript,
    parse_info_symbol,
    registers_from_mi,
    stop_from_record,
    threads_from_info,
)
from lab.parsers.mi_records import parse_record
from lab.parsers.pybt import parse_py_bt

DATA = Path(__file__).resolve().parent / "data"
LOCK = DATA / "gdb-lock-x86_64.txt"  # tests/debugger_targets/blocked_on_lock.py, pid 10300
CHROMA = DATA / "gdb-chromadb-x86_64.txt"  # the forked child of chromadb_fork_child.py
RUST_SO = "chromadb_rust_bindings/chromadb_rust_bindings.abi3.so"
REGISTER_COUNT = 112  # scalar registers gdb 13 listed on the recording x86_64 machine


@pytest.mark.parametrize(
    ("target_id", "tid"),
    [
        ("Thread 0x7f4fcc624b80 (LWP 5643)", 5643),
        ('Thread 0x7f.. (LWP 123) "tokio-runtime-w"', 123),
        ("process 4242", 4242),
        ("LWP 77", 77),
        ("Thread 0x7f4fcc624b80", None),
        ("", None),
        (None, None),
    ],
    ids=["thread", "named", "no-libthread_db", "bare-lwp", "no-lwp", "empty", "none"],
)
def test_lwp_from_target_id(target_id, tid):
    assert lwp_from_target_id(target_id) == tid


def test_threads_from_a_thread_info_record():
    # GIVEN gdb's -thread-info answer for two threads
    record = parse_response(
        '8^done,threads=[{id="1",target-id="Thread 0x7f (LWP 10)",name="python",state="stopped"},'
        '{id="2",target-id="Thread 0x7e (LWP 11)",name="tokio-runtime-w",state="stopped"}],'
        'current-thread-id="1"'
    )
    # WHEN parsed THEN gdb ids, tids and names come out in order
    threads = threads_from_info(record["payload"])
    assert [(t.gdb_id, t.tid, t.name) for t in threads] == [
        ("1", 10, "python"),
        ("2", 11, "tokio-runtime-w"),
    ]


def test_frames_from_a_stack_record():
    # GIVEN one frame with debug info and one gdb could not name
    record = parse_response(
        '14^done,stack=[frame={level="0",addr="0x00007f064eb1f829",func="syscall",'
        'file="../syscall.S",fullname="/src/syscall.S",line="38",arch="i386:x86-64"},'
        'frame={level="1",addr="0x00007f063b7882c6",func="??",from="/x/libfoo.so"}]'
    )
    # WHEN parsed
    frames = frames_from_stack(record["payload"])
    # THEN levels, pcs, names, files and libraries are kept as gdb gives them
    assert frames == [
        Frame(0, "0x00007f064eb1f829", "syscall", None, None, "/src/syscall.S", 38),
        Frame(1, "0x00007f063b7882c6", "??", None, "/x/libfoo.so", None, None),
    ]


@pytest.mark.parametrize(
    ("text", "symbol"),
    [
        (
            "syscall + 25 in section .text of /lib/x86_64-linux-gnu/libc.so.6\n",
            SymbolInfo("syscall", 25, "/lib/x86_64-linux-gnu/libc.so.6"),
        ),
        ("main in section .text\n", SymbolInfo("main", 0, None)),
        (
            "std::sys::pal::unix::futex::futex_wait + 98 in section .text of /a b/lib.so\n",
            SymbolInfo("std::sys::pal::unix::futex::futex_wait", 98, "/a b/lib.so"),
        ),
        ("No symbol matches 0x00007f063b7882c6.\n", None),
        ("", None),
    ],
    ids=["libc", "executable", "rust-path-with-space", "no-symbol", "empty"],
)
def test_parse_info_symbol(text, symbol):
    assert parse_info_symbol(text) == symbol


def test_a_symbol_offset_is_kept_only_for_the_frames_own_function():
    # GIVEN an inlined frame whose pc lies in another (the enclosing) function
    inlined = Frame(9, "0x1", "_PyObject_VectorcallTstate", library="/lib/libpython.so")
    own = Frame(10, "0x1", "PyObject_Vectorcall")
    unnamed = Frame(1, "0x2", "??")
    symbol = SymbolInfo("PyObject_Vectorcall", 51, "/lib/libpython.so")
    # WHEN the symbol is applied THEN only the matching frame gets an offset
    assert apply_symbol(inlined, symbol).offset is None
    assert apply_symbol(own, symbol).offset == 51
    assert own.library == "/lib/libpython.so"
    assert apply_symbol(unnamed, SymbolInfo("PyInit_x", 999, "/x.so")).function == "??"
    assert unnamed.offset is None and unnamed.library == "/x.so"


def test_registers_skip_gaps_and_vector_registers():
    names = ["rax", "", "rsi", "xmm0"]
    values = [
        {"number": "0", "value": "0xfffffffffffffe00"},
        {"number": "1", "value": "0x5"},
        {"number": "2", "value": "0x89"},
        {"number": "3", "value": "{v8_bfloat16 = {0x0, 0x0}, uint128 = 0x0}"},
    ]
    assert registers_from_mi(names, values) == {"rax": "0xfffffffffffffe00", "rsi": "0x89"}


@pytest.mark.parametrize(
    ("at_pc", "before_pc", "expected"),
    [
        ("test %eax,%eax", "syscall", "syscall"),
        ("cmp $0xfffffffffffff001,%rax", "syscall", "syscall"),
        ("cmn x0, #0x1, lsl #12", "svc #0x0", "svc #0x0"),
        ("ret", "add %al,(%rax)", "ret"),
        ("ret", None, "ret"),
    ],
    ids=["x86_64-futex", "x86_64-syscall-wrapper", "aarch64", "not-a-syscall", "no-before"],
)
def test_the_blocking_instruction_is_the_syscall_before_pc(at_pc, before_pc, expected):
    assert blocking_instruction(at_pc, before_pc) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('*stopped,frame={addr="0x1"},thread-id="1",stopped-threads="all"', ("attached", None)),
        (
            '*stopped,reason="signal-received",signal-name="SIGSEGV",signal-meaning="Seg"',
            ("signal-received SIGSEGV", "SIGSEGV"),
        ),
        ('*stopped,reason="exited-normally"', ("exited-normally", None)),
    ],
    ids=["attach", "signal", "exited"],
)
def test_stop_reason_from_a_stopped_record(line, expected):
    assert stop_from_record(parse_response(line)) == expected


def test_console_commands_round_trip_through_mi_quoting():
    command = console_command('source /opt/py "3"/bin\\python3.11-gdb.py')
    assert command.startswith('-interpreter-exec console "')
    assert console_command_of(command) == 'source /opt/py "3"/bin\\python3.11-gdb.py'
    assert console_command_of("-thread-info") is None


PY_BT = """\
Traceback (most recent call first):
  <built-in method acquire of _thread.lock object at remote 0x7f4fcc5a0e40>
  File "/work/main/tests/debugger_targets/blocked_on_lock.py", line 10, in <module>
    lock.acquire()  # line 10: blocks forever in futex(FUTEX_WAIT_BITSET)
  Waiting for the GIL
  File "/usr/lib/python3.11/threading.py", line ?, in wait
  Garbage-collecting
  (frame information optimized out)
"""


@pytest.mark.parametrize(
    ("text", "frames"),
    [
        (
            PY_BT,
            [
                PythonFrame("<built-in>", None, "acquire"),
                PythonFrame("/work/main/tests/debugger_targets/blocked_on_lock.py", 10, "<module>"),
                PythonFrame("/usr/lib/python3.11/threading.py", None, "wait"),
            ],
        ),
        ("Unable to locate python frame\n", []),
        ("", []),
        (
            '  File "/a.py", line 3, in f\n    File "/not/a/frame.py", line 1, in g\n',
            [PythonFrame("/a.py", 3, "f")],
        ),
    ],
    ids=["mixed", "not-python", "empty", "source-line-that-looks-like-a-frame"],
)
def test_parse_py_bt(text, frames):
    assert parse_py_bt(text) == frames


def test_lock_transcript_rebuilds_the_blocked_main_thread():
    # GIVEN the gdb.txt recorded on blocked_on_lock.py
    # WHEN it is parsed offline
    info = parse_gdb_transcript(LOCK.read_text(), transcript=LOCK.name)

    # THEN it has the capture's facts: one thread in a libc futex wait, at line 10
    assert (info.name, info.pid, info.version) == ("gdb", 10300, "GNU gdb (Debian 13.1-3) 13.1")
    assert info.stop_reason == "attached" and info.signal is None
    assert info.seconds == pytest.approx(0.88)
    assert info.transcript == LOCK.name
    assert [(t.tid, t.name) for t in info.threads] == [(10300, "python")]
    frames = info.threads[0].frames
    assert len(frames) == 29
    assert frames[0] == Frame(
        index=0,
        pc="0x00007f13d8ea3e96",
        function="__futex_abstimed_wait_common",
        offset=70,
        library="/lib/x86_64-linux-gnu/libc.so.6",
        file="./nptl/./nptl/futex-internal.c",
        line=103,
    )
    assert info.threads[0].python_frames == [
        PythonFrame("/work/main/tests/debugger_targets/blocked_on_lock.py", 10, "<module>")
    ]
    # AND the registers hold the futex(2) call: FUTEX_WAIT_BITSET|PRIVATE|CLOCK_REALTIME, no timeout
    assert len(info.registers) == REGISTER_COUNT
    assert info.registers["orig_rax"] == "0xca"  # 202 = futex
    assert info.registers["rsi"] == "0x189" and info.registers["r10"] == "0x0"
    assert info.instruction == "syscall"


def test_chromadb_transcript_rebuilds_the_deadlocked_child():
    # GIVEN the gdb.txt recorded on the forked ChromaDB child
    # WHEN it is parsed offline
    info = parse_gdb_transcript(CHROMA.read_text())

    # THEN the single thread waits in libc's syscall() called from the Rust bindings
    assert len(info.threads) == 1 and info.threads[0].tid == info.pid == 10342
    frames = info.threads[0].frames
    assert len(frames) == 30
    assert (frames[0].function, frames[0].offset) == ("syscall", 25)
    assert frames[0].library == "/lib/x86_64-linux-gnu/libc.so.6"
    rust = [f for f in frames if f.library and f.library.endswith(RUST_SO)]
    assert [f.index for f in rust] == list(range(1, 9))
    assert all(f.function == "??" for f in rust)  # the wheel is stripped: gdb cannot name them
    # AND Python shows which call went into Rust
    python = info.threads[0].python_frames
    assert python[0].file.endswith("chromadb/api/rust.py")
    assert (python[0].line, python[0].function) == (582, "_query")
    assert [f.function for f in python] == ["_query", "query", "main", "<module>"]
    # AND the futex arguments: rsi 0x89 = FUTEX_WAIT_BITSET_PRIVATE, r10 0 = no timeout
    assert len(info.registers) == REGISTER_COUNT
    assert info.registers["orig_rax"] == "0xca"
    assert (info.registers["rsi"], info.registers["r10"]) == ("0x89", "0x0")
    assert info.registers["rdi"] == "0x55cf35394a50"  # the futex word
    assert info.instruction == "syscall"
    assert info.message and info.message.endswith("python3.11-gdb.py")


def test_a_transcript_cut_short_still_parses_what_it_holds():
    # GIVEN the first half of a transcript, as a capture killed mid-way leaves it
    lines = CHROMA.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if line.endswith('console "py-bt"'))
    # WHEN parsed
    info = parse_gdb_transcript("\n".join(lines[:cut]) + "\n")
    # THEN threads, frames and registers so far are there, and nothing is made up
    assert info.threads[0].frames and info.threads[0].python_frames == []
    assert info.registers["rsi"] == "0x89"
    assert info.seconds is None


@pytest.mark.parametrize("path", [LOCK, CHROMA], ids=["lock", "chromadb"])
def test_recorded_mi_lines_read_as_pygdbmi_reads_them(path):
    # GIVEN every line of a recorded gdb.txt WHEN the lab's record reader and pygdbmi read it
    # THEN both give the same record
    for line in path.read_text().splitlines():
        assert parse_record(line) == parse_response(line), line


_STRING_PIECES = ["a", " ", ",", "{", "}", "[", "]", "=", "\\n", '\\"', "\\\\", "\\303\\251",
                  "\\101", "é", "\\t", "\\e", "\\377"]


def _mi_value(rnd: random.Random, depth: int = 0) -> str:
    """A random MI value: a c-string with escapes, a tuple, a list of values or of results."""
    roll = rnd.random()
    if depth > 3 or roll < 0.5:
        return '"' + "".join(rnd.choice(_STRING_PIECES) for _ in range(rnd.randrange(6))) + '"'
    if roll < 0.75:
        return "{" + ",".join(_mi_result(rnd, depth + 1) for _ in range(rnd.randrange(4))) + "}"
    items = _mi_value if rnd.random() < 0.5 else _mi_result
    return "[" + ",".join(items(rnd, depth + 1) for _ in range(rnd.randrange(4))) + "]"


def _mi_result(rnd: random.Random, depth: int = 0) -> str:
    return rnd.choice(["a", "b", "thread-id", "frame"]) + "=" + _mi_value(rnd, depth)


def test_random_well_formed_mi_records_read_as_pygdbmi_reads_them():
    # GIVEN 5,000 random well-formed records: results, async records with repeated keys,
    # nested tuples and lists, escapes (octal UTF-8, invalid UTF-8), stream records, prompts
    rnd = random.Random(11)
    for _ in range(5_000):
        kind = rnd.choice(["^", "*", "=", "~", "&", "@", "(gdb)"])
        if kind in "^*=":
            line = (rnd.choice(["", "12"]) + kind + rnd.choice(["done", "stopped", "error"])
                    + "".join("," + _mi_result(rnd) for _ in range(rnd.randrange(4))))
        else:
            line = kind + _mi_value(rnd, depth=9) if kind != "(gdb)" else "(gdb) "
        # WHEN both read it THEN they agree
        assert parse_record(line) == parse_response(line), line


def test_extension_candidates_for_pyenv_venv_and_debian():
    # GIVEN a pyenv interpreter (what a venv's python resolves to) and its libpython
    pyenv = extension_candidates(
        "/root/.pyenv/versions/3.11.7/bin/python3.11",
        "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0",
    )
    # THEN the file next to the interpreter comes first
    assert pyenv[0] == Path("/root/.pyenv/versions/3.11.7/bin/python3.11-gdb.py")
    # GIVEN Debian's system Python THEN the auto-load location is a candidate
    debian = extension_candidates("/usr/bin/python3.11", None)
    assert Path("/usr/share/gdb/auto-load/usr/bin/python3.11-gdb.py") in debian
    lib = extension_candidates(None, "/usr/lib/x86_64-linux-gnu/libpython3.12.so.1.0")
    assert (
        Path("/usr/share/gdb/auto-load/usr/lib/x86_64-linux-gnu/libpython3.12.so.1.0-gdb.py")
        in lib
    )
    # GIVEN a process that is not Python THEN there is nothing to look for
    assert extension_candidates("/usr/bin/sleep", None) == []


def test_libpython_and_version_from_maps():
    maps = (
        "7f13d8e00000-7f13d8e28000 r--p 00000000 08:01 1 /lib/x86_64-linux-gnu/libc.so.6\n"
        "7f13d9000000-7f13d9100000 r--p 00000000 08:01 2 "
        "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0\n"
    )
    assert libpython_from_maps(maps) == "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0"
    assert libpython_from_maps("55c0-55c1 r--p 0 08:01 3 /usr/bin/python3.12\n") is None
    assert python_version("libpython3.13t.so.1.0") == "3.13t"
    assert python_version(None, "/usr/bin/python3.12") == "3.12"
    assert python_version("/usr/bin/sleep") is None
