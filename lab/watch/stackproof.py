"""Prove a deadlock from a debugger's stacks: the proof a backend without syscalls can make.

The portable backend sees no syscall a thread waits in (psutil shows none; macOS has no /proc),
so ``judge``'s proof from /proc samples cannot form there. A debugger's capture can stand in:
the process is proven deadlocked when *every* thread's innermost frame is a wait primitive that
has no timeout, and nothing in the frames above it names a timed variant.

- macOS (libsystem_kernel, libdispatch): ``__psynch_mutexwait`` (pthread_mutex_lock),
  ``__psynch_cvwait`` (pthread_cond_wait: ``pthread_cond_timedwait`` passes the same call a
  deadline, so a frame naming it rules the thread out), ``__ulock_wait``/``__ulock_wait2``
  (os_unfair_lock), ``semaphore_wait_trap`` and ``_dispatch_sema4_wait`` (dispatch semaphores;
  the timed ones are ``semaphore_timedwait_trap`` and ``_dispatch_sema4_timedwait``).
- Linux: a futex wait, with a NULL timeout read from the registers the debugger captured
  (x86_64: op in rsi, timeout in r10; arm64: x1 and x3), or under a lock call that never
  times out (``__lll_lock_wait``: a glibc mutex). The registers are those of the selected
  thread, so they are used only where the process has one thread.

It is one snapshot, and the backend shows no signal handlers: a handler for a signal from
outside could still end CPython's interruptible lock wait (see ``judge``). The detail says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.evidence import DebuggerInfo, DebugThread
from lab.linux.syscalls import FUTEX_CMD_MASK, FUTEX_PRIVATE_FLAG, FUTEX_WAIT_OPS

PROOF = "debugger-stacks"
DARWIN_WAITS = ("__psynch_mutexwait", "__psynch_cvwait", "__ulock_wait", "__ulock_wait2",
                "semaphore_wait_trap", "_dispatch_sema4_wait")
LINUX_FUTEX_WAITS = ("__futex_abstimed_wait_common", "__futex_abstimed_wait_common64",
                     "__futex_abstimed_wait_cancelable64", "futex_wait", "syscall")
LINUX_UNTIMED_LOCKS = ("__lll_lock_wait", "__lll_lock_wait_private")
# a frame whose name holds one of these has a deadline: the wait can end
TIMED_WORDS = ("timedwait", "clockwait", "timedlock", "clocklock", "timeout")
CALLERS = 6  # frames above the primitive searched for a timed variant or an untimed lock
# (op register, timeout register) of the futex syscall, by the registers each arch has
FUTEX_REGISTERS = (("rsi", "r10"), ("x1", "x3"))


@dataclass(frozen=True)
class StackProof:
    proven: bool
    detail: str
    proof: str = PROOF


def _names(thread: DebugThread) -> list[str]:
    return [frame.function or "" for frame in thread.frames[:CALLERS + 1]]


def _glibc_name(name: str) -> str:
    """``__lll_lock_wait`` for glibc's internal alias ``__GI___lll_lock_wait`` and for
    ``__lll_lock_wait.constprop.0``: the name the tables above use."""
    return name.removeprefix("__GI_").split(".", 1)[0]


def _futex_untimed(registers: dict[str, str]) -> bool | None:
    """From the registers: True for a private futex wait with a NULL timeout, False for any
    other call, None when the registers do not show a futex call's arguments."""
    for op_name, timeout_name in FUTEX_REGISTERS:
        if op_name in registers and timeout_name in registers:
            try:
                op, timeout = int(registers[op_name], 16), int(registers[timeout_name], 16)
            except ValueError:
                return None
            return (op & FUTEX_CMD_MASK) in FUTEX_WAIT_OPS and bool(op & FUTEX_PRIVATE_FLAG) \
                and timeout == 0
    return None


def thread_wait(thread: DebugThread, registers: dict[str, str]) -> str | None:
    """The untimed wait this thread is in (e.g. "__psynch_mutexwait", "futex, timeout NULL"),
    or None when its stack does not prove one."""
    names = _names(thread)
    if not names or any(word in name.lower() for name in names[1:] for word in TIMED_WORDS):
        return None
    innermost = names[0]
    if innermost in DARWIN_WAITS:  # not "_dispatch_sema4_wait.cold.1": that is the trap path
        return innermost
    plain = [_glibc_name(name) for name in names]
    lock = next((name for name in plain if name in LINUX_UNTIMED_LOCKS), None)
    if lock is not None and plain[0] in (lock, *LINUX_FUTEX_WAITS):
        return f"futex under {lock} (a glibc mutex: no timeout)"
    if plain[0] not in LINUX_FUTEX_WAITS:
        return None
    if registers and _futex_untimed(registers):
        return "futex wait, timeout NULL (from the registers)"
    return None


def judge(info: DebuggerInfo, own_stop: str = "SIGSTOP") -> StackProof:
    """Is the captured process deadlocked, by its stacks alone? ``own_stop``: the signal the
    lab stopped it with (the attach's SIGSTOP; the catch interrupts with SIGINT)."""
    stop = info.signal or ""
    if stop not in ("", own_stop) or "EXC_" in (info.stop_reason or ""):
        return StackProof(False, f"the process stopped at {info.stop_reason or stop}, not at "
                          "the debugger's attach: the stacks are not those of a wait")
    threads = [thread for thread in info.threads if thread.frames]
    if not threads or len(threads) != len(info.threads):
        return StackProof(False, "the debugger captured no frames of some thread")
    registers = info.registers if len(threads) == 1 else {}
    waits = {}
    for thread in threads:
        wait = thread_wait(thread, registers)
        if wait is None:
            top = thread.frames[0].function or thread.frames[0].pc or "?"
            return StackProof(False, f"thread {thread.tid} is in {top}: not a wait without a "
                              "timeout, so the stacks prove no deadlock")
        waits[thread.tid] = wait
    who = ("its only thread waits" if len(waits) == 1 else
           f"all {len(waits)} threads wait")
    kinds = "; ".join(sorted(set(waits.values())))
    return StackProof(True, f"deadlock proven from the debugger's stacks: {who} in a primitive "
                      f"without a timeout ({kinds}); one snapshot, and this backend shows no "
                      "signal handlers that could still end the wait")
