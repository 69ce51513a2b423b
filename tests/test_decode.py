"""Decoding /proc syscall lines, futex ops, register dumps and cn_proc messages, offline."""

import struct

import pytest

from conftest import DATA
from lab.linux import netlink, syscalls


def recorded_lines():
    text = (DATA / "proc-syscall-x86_64.txt").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_recorded_chromadb_child_line_decodes_to_futex_wait_forever():
    # GIVEN the line recorded from a deadlocked chromadb-tokio child
    line = recorded_lines()[0]
    # WHEN it is decoded as x86_64
    call = syscalls.parse_proc_syscall(line, "x86_64")
    # THEN it is futex(…, FUTEX_WAIT_BITSET_PRIVATE, …, NULL)
    assert call.nr == 202 and call.name == "futex"
    assert call.futex.op == "FUTEX_WAIT_BITSET_PRIVATE"
    assert call.futex.uaddr == "0x561d7adc21d0"
    assert call.futex.val == 0xA5
    assert call.futex.timeout is None
    assert call.futex.private and call.futex.is_wait


def test_recorded_parent_line_is_wait4_not_futex():
    call = syscalls.parse_proc_syscall(recorded_lines()[1], "x86_64")
    assert call.name == "wait4" and call.futex is None


@pytest.mark.parametrize("line", ["running", "-1 0x7ffc43e2ee38 0x7f8d4e51f829", ""])
def test_running_or_outside_a_syscall_is_none(line):
    assert syscalls.parse_proc_syscall(line, "x86_64") is None


def test_aarch64_line_uses_the_generic_table():
    # GIVEN an aarch64 line in the kernel's layout (nr = x8, then x0..x5, sp, pc): futex is 98
    line = "98 0xaaaae3c1f2a0 0x89 0x0 0x0 0x0 0xffffffff 0xffffd8a1e560 0xffff9c2b6f1c"
    call = syscalls.parse_proc_syscall(line, "aarch64")
    assert call.name == "futex"
    assert call.futex.op == "FUTEX_WAIT_BITSET_PRIVATE" and call.futex.timeout is None
    # AND the same number on x86_64 is something else entirely (202 there)
    assert syscalls.syscall_name(98, "x86_64") != "futex"
    assert syscalls.syscall_name(202, "x86_64") == "futex"


def test_aarch64_register_dump_decodes_futex():
    # x8 = 98 -> futex, x1 = 0x89 -> FUTEX_WAIT_BITSET_PRIVATE, x3 = 0 -> no timeout
    regs = {"x0": "0xaaaae3c1f2a0", "x1": "0x89", "x2": "0x0", "x3": "0x0", "x4": "0x0",
            "x5": "0xffffffff", "x8": "0x62"}
    call = syscalls.decode_registers(regs, "aarch64")
    assert call.name == "futex"
    assert call.futex.op == "FUTEX_WAIT_BITSET_PRIVATE" and call.futex.timeout is None


def test_x86_64_register_dump_decodes_futex_with_timeout():
    regs = {"orig_rax": "0xca", "rdi": "0x5604e143fab8", "rsi": "0x89", "rdx": "0x1",
            "r10": "0x7f874209dc20", "r8": "0x0", "r9": "0xffffffff"}
    call = syscalls.decode_registers(regs, "x86_64")
    assert call.futex.timeout == "0x7f874209dc20"


@pytest.mark.parametrize("op, name, waits", [
    (0x80, "FUTEX_WAIT_PRIVATE", True),
    (0x89, "FUTEX_WAIT_BITSET_PRIVATE", True),
    (0x189, "FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME", True),
    (0x81, "FUTEX_WAKE_PRIVATE", False),
    (0x0, "FUTEX_WAIT", True),
    (0x86, "FUTEX_LOCK_PI_PRIVATE", True),
])
def test_futex_op_names(op, name, waits):
    call = syscalls.decode_futex([0x1000, op, 0, 0])
    assert call.op == name and call.is_wait is waits
    assert call.private is bool(op & 0x80)


def _message(what, payload):
    event = struct.pack("=IIQ", what, 0, 123456789) + payload
    cn = struct.pack("=IIIIHH", 1, 1, 0, 0, len(event), 0) + event
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def test_cn_proc_fork_and_exit_messages():
    # GIVEN a datagram with a fork event and an exit event (layouts from cn_proc.h)
    data = _message(netlink.PROC_EVENT_FORK, struct.pack("=IIII", 10, 10, 11, 11))
    data += _message(netlink.PROC_EVENT_EXIT, struct.pack("=IIIIII", 11, 11, 139, 17, 10, 10))
    fork, exit_ = netlink.parse_messages(data)
    assert (fork.parent_tgid, fork.child_tgid, fork.is_thread) == (10, 11, False)
    # THEN the exit code is a wait status: 139 = SIGSEGV (11) with a core dump flag (0x80)
    assert exit_.tgid == 11 and exit_.wait_status == 139
    assert exit_.timestamp_ns == 123456789


def test_children_scan_fallback_agrees_with_the_children_file(reaper):
    # GIVEN a process with two children
    import sys

    from lab.linux import procfs

    code = (
        "import os,sys\nfor _ in range(2):\n    if os.fork() == 0:\n"
        "        sys.stdin.read(); os._exit(0)\nprint('ready', flush=True)\nsys.stdin.read()"
    )
    import subprocess

    proc = reaper.popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    # WHEN both ways of listing children are asked
    # THEN they agree (the scan is what runs without CONFIG_PROC_CHILDREN)
    assert procfs._children_by_scan(proc.pid) == procfs.children(proc.pid)
    assert len(procfs.children(proc.pid)) == 2
