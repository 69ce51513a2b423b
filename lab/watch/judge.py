"""Judge a process from /proc samples: proven deadlock, spinning, or blocked somewhere.

A deadlock is *proven* only when every thread of the process sleeps in a futex wait with no
timeout on a process-private futex, nothing about those waits changes across samples that span
at least ``STABLE_S``, and nothing the process arranged can end the wait (``possible_wakeup``):
a private futex can only be woken by a thread of the same process, every such thread is itself
waiting, and so no thread of its own can wake it, no timer it armed, and no handler it
installed for a signal from outside. A wait with a timeout, on a pipe, on a child or on a
shared futex can still end, and is never called a deadlock.

Signals, measured on Linux/glibc: CPython's locks wait in glibc's ``sem_wait`` (Python/
thread_pthread.h, USE_SEMAPHORES), a ``FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME`` wait
with no timeout (op 0x189) that returns EINTR to CPython when a handled signal arrives; in the
main thread CPython then runs the Python handler, and an exception it raises leaves the wait.
A native wait — Rust's futex mutex (op 0x89), a glibc mutex (op 0x80) — retries on EINTR:
no handler can end it. So a handler counts only where the main thread sits in that
interruptible wait (a native condition variable looks the same and is judged the same way:
not proven, a hang at the timeout — never a false proof). CPython's own SIGINT handler, which
every Python process has, does not count; nor do fault-signal handlers (faulthandler).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.backend import SignalState
from lab.evidence import ThreadState

PROOF = "procfs-syscalls"  # the evidence's ``proof`` of a deadlock proven here

# How long every thread's wait must stay identical before the deadlock counts as proven, and
# how many samples that span must hold. 0.1 s keeps the proof well under the 0.3 s target.
STABLE_S = 0.1
MIN_SAMPLES = 3

# A process spins when its CPU time rose in each of the last SPIN_INTERVALS sample intervals
# (at 20 ms a sample, a busy thread gains about 2 ticks of 10 ms each); the share reported is
# over the last SPIN_WINDOW_S.
SPIN_INTERVALS = 3
SPIN_WINDOW_S = 1.0
HISTORY = 64  # samples kept per process (about 1.3 s at the 20 ms poll interval)
# Without syscalls (the portable backend): how long a process must sleep with its CPU time
# unchanged before a debugger looks at its stacks for a proof (lab.watch.stackproof).
QUIET_S = 0.5


def waits_forever(thread: ThreadState) -> bool:
    """True when the thread sleeps in a private futex wait whose timeout pointer is NULL."""
    call = thread.syscall
    return (
        thread.state == "S"
        and call is not None
        and call.futex is not None
        and call.futex.is_wait
        and call.futex.private
        and call.futex.timeout is None
    )


def _signature(threads: list[ThreadState]) -> tuple:
    # Everything that would change if any thread woke up, even briefly.
    return tuple(
        (t.tid, t.state, tuple(t.syscall.args) if t.syscall else None, t.voluntary_ctxt_switches)
        for t in sorted(threads, key=lambda t: t.tid)
    )


@dataclass
class DeadlockWatch:
    """Feed samples of one process; ``proven`` becomes True once the proof holds."""

    first_blocked_at: float | None = None
    stable_since: float | None = None
    samples: int = 0
    proven: bool = False
    _signature: tuple | None = None
    history: list[tuple[float, list[ThreadState]]] = field(default_factory=list)

    def feed(self, now: float, threads: list[ThreadState], traced: bool = False) -> bool:
        self.history = (self.history + [(now, threads)])[-HISTORY:]
        if traced or not threads or not all(waits_forever(t) for t in threads):
            self.first_blocked_at = None
            self.stable_since = None
            self.samples = 0
            self._signature = None
            return False
        signature = _signature(threads)
        if signature != self._signature:
            self._signature = signature
            self.stable_since = now
            self.samples = 1
            if self.first_blocked_at is None:
                self.first_blocked_at = now
            return False
        self.samples += 1
        if self.samples >= MIN_SAMPLES and now - self.stable_since >= STABLE_S:
            self.proven = True
        return self.proven


def quiet_for(watch: DeadlockWatch) -> float:
    """How long every thread of the process has slept with its CPU time unchanged, by the
    samples: where the backend shows no syscalls, the sign that a debugger's look is due."""
    if not watch.history:
        return 0.0
    last_at, last = watch.history[-1]

    def shape(threads):
        return sorted((t.tid, t.cpu_ticks) for t in threads)

    if not last or any(t.state not in "SD" for t in last):
        return 0.0
    since = last_at
    for at, threads in reversed(watch.history):
        if shape(threads) != shape(last) or any(t.state not in "SD" for t in threads):
            break
        since = at
    return last_at - since


def describe_deadlock(threads: list[ThreadState]) -> str:
    words = sorted({f"{t.syscall.futex.op} on {t.syscall.futex.uaddr}" for t in threads})
    count = len(threads)
    who = "its only thread waits" if count == 1 else f"all {count} threads wait"
    return (
        f"deadlock proven: {who} forever in futex ({'; '.join(words)}), timeout NULL, "
        "process-private, unchanged across samples: no thread is left that could wake it"
    )


def describe_wait(thread: ThreadState, syscalls: bool = True) -> str:
    """One phrase for what a thread is doing, e.g. "futex wait with timeout". ``syscalls``:
    does the backend show them (the portable one does not)."""
    if thread.state == "R":
        return "running"
    if thread.state in ("T", "t"):
        return "stopped" if thread.state == "T" else "stopped by a tracer"
    if thread.state == "Z":
        return "zombie"
    call = thread.syscall
    if call is None and not syscalls:
        return f"state {thread.state} (this backend shows no syscall)"
    if call is None:
        return f"state {thread.state} ({thread.wchan or 'outside a syscall'})"
    if call.futex is not None:
        futex = call.futex
        if not futex.is_wait:
            return f"futex {futex.op}"
        timeout = "no timeout" if futex.timeout is None else "with a timeout"
        shared = "" if futex.private else ", shared futex"
        return f"futex wait {futex.op} {timeout}{shared}"
    names = {
        "read": "reading (read)", "wait4": "waiting for a child (wait4)",
        "waitid": "waiting for a child (waitid)", "epoll_wait": "in epoll_wait",
        "epoll_pwait": "in epoll_pwait", "poll": "in poll", "ppoll": "in ppoll",
        "select": "in select", "pselect6": "in pselect6", "nanosleep": "sleeping (nanosleep)",
        "clock_nanosleep": "sleeping (clock_nanosleep)", "pause": "in pause()",
    }
    return names.get(call.name, f"in {call.name}()")


def describe_unfinished(watch: DeadlockWatch, syscalls: bool = True) -> str:
    """Describe a process that has not finished: spinning (livelock) or blocked, and where.

    Spinning means busy *now*: a thread running in the last sample, or CPU time rising in each
    of the last ``SPIN_INTERVALS`` sample intervals. Start-up work before that does not count.
    """
    if not watch.history:
        return "not finished; no sample was taken"
    t1, last = watch.history[-1]
    recent = watch.history[-(SPIN_INTERVALS + 1):]

    def ticks(threads):
        return sum(t.cpu_ticks or 0 for t in threads)

    rising = len(recent) > SPIN_INTERVALS and all(
        ticks(b) > ticks(a) for (_, a), (_, b) in zip(recent, recent[1:]))
    running = [t for t in last if t.state == "R"]
    if rising or running:
        window = [(t, th) for t, th in watch.history if t1 - t <= SPIN_WINDOW_S]
        t0, first = window[0]
        share = (ticks(last) - ticks(first)) / 100.0 / (t1 - t0) if t1 > t0 else 0.0
        busy = running or last
        names = ", ".join(f"{t.tid} ({t.name})" for t in busy[:4])
        return (f"livelock: spinning, not blocked — busy thread(s) {names}, about {share:.0%} "
                f"of a CPU over the last {t1 - t0:.2f} s")
    waits = sorted({describe_wait(t, syscalls) for t in last})
    return "blocked, not a proven deadlock: " + "; ".join(waits)


# -- what could still end a wait ------------------------------------------------------------

CPYTHON_LOCK_WAIT_OP = 0x189  # FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME: glibc sem_wait
TIMER_SIGNALS = ("SIGALRM", "SIGVTALRM", "SIGPROF")
# Signals a supervisor or a user sends to ask something of a process; SIGINT is left out:
# CPython installs a handler for it in every process.
OUTSIDE_SIGNALS = ("SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM")
# Pending, these do nothing unless caught (their default action is to ignore them).
HARMLESS_BY_DEFAULT = ("SIGCHLD", "SIGCONT", "SIGURG", "SIGWINCH")


def interruptible(pid: int, threads: list[ThreadState]) -> bool:
    """Does the main thread wait where a Python signal handler can end the wait?"""
    main = next((t for t in threads if t.tid == pid), None)
    call = main.syscall if main is not None else None
    return bool(call and call.futex and call.futex.op_raw == CPYTHON_LOCK_WAIT_OP)


def possible_wakeup(pid: int, threads: list[ThreadState],
                    signals: SignalState | None) -> str | None:
    """What could still end these waits (a pending signal, a timer, a handler for a signal
    from outside, where it can interrupt the wait), all of it in one phrase; None: nothing."""
    if signals is None:
        return None
    reasons = []
    live = [s for s in signals.pending if s not in signals.blocked and s not in signals.ignored
            and (s in signals.caught or s not in HARMLESS_BY_DEFAULT)]
    if live:
        reasons.append(f"{', '.join(live)} pending and not blocked: its delivery can end the "
                       "wait")
    can_interrupt = interruptible(pid, threads)
    for timer in signals.timers:
        number = timer.split()[1] if len(timer.split()) > 1 else ""
        if number in signals.blocked or number in signals.ignored:
            continue
        if number not in signals.caught and number not in HARMLESS_BY_DEFAULT:
            reasons.append(f"POSIX timer {timer}: when it fires, {number} ends the process")
        elif number in signals.caught and can_interrupt:
            reasons.append(f"POSIX timer {timer}, and a handler for {number}: it can end the "
                           "main thread's interruptible wait")
    if can_interrupt:
        armed = [s for s in TIMER_SIGNALS if s in signals.caught and s not in signals.blocked]
        if armed:
            reasons.append(f"a handler for {', '.join(armed)} is installed (alarm() and "
                           "setitimer() leave no trace in /proc): when it fires it can end the "
                           "main thread's interruptible wait")
        outside = [s for s in OUTSIDE_SIGNALS if s in signals.caught and s not in signals.blocked]
        if outside:
            reasons.append(f"a handler for {', '.join(outside)} is installed and the main "
                           "thread waits where it can end the wait: a process waiting for a "
                           "signal by design")
    return "; ".join(reasons) or None
