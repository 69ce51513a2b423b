"""Judge a process from /proc samples: proven deadlock, spinning, or blocked somewhere.

A deadlock is *proven* only when every thread of the process sleeps in a futex wait with no
timeout on a process-private futex, and nothing about those waits changes across samples that
span at least ``STABLE_S``: a private futex can only be woken by a thread of the same process,
and every such thread is itself waiting, so nobody is left who could wake it. A wait with a
timeout, on a pipe, on a child or on a shared futex can still end, and is never called a
deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.evidence import ThreadState

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


def describe_deadlock(threads: list[ThreadState]) -> str:
    words = sorted({f"{t.syscall.futex.op} on {t.syscall.futex.uaddr}" for t in threads})
    count = len(threads)
    who = "its only thread waits" if count == 1 else f"all {count} threads wait"
    return (
        f"deadlock proven: {who} forever in futex ({'; '.join(words)}), timeout NULL, "
        "process-private, unchanged across samples: no thread is left that could wake it"
    )


def describe_wait(thread: ThreadState) -> str:
    """One phrase for what a thread is doing, e.g. "futex wait with timeout"."""
    if thread.state == "R":
        return "running"
    if thread.state in ("T", "t"):
        return "stopped" if thread.state == "T" else "stopped by a tracer"
    if thread.state == "Z":
        return "zombie"
    call = thread.syscall
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


def describe_unfinished(watch: DeadlockWatch) -> str:
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
    waits = sorted({describe_wait(t) for t in last})
    return "blocked, not a proven deadlock: " + "; ".join(waits)
