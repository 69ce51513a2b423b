"""What each blocked thread of a live process waits for, and who could end that wait.

From the system call each thread sleeps in (``/proc/PID/task/TID/syscall``, decoded) and the
descriptors it names (through the process backend): a read of a pipe can be ended by the
processes that hold its write end open (the waiter itself included); a ``wait4`` by the
children; a private futex by the other threads of the same process; a sleep or a wait with a
timeout ends by itself. One entry per distinct wait (the threads in it listed), in
``processes[].waits_for``. The portable backend sees no system calls and no descriptors:
nothing is listed there rather than a guess.

``cycle`` proves a deadlock across processes: a set of processes each of whose threads is in
an untimed wait that only members of the set could end (a pipe whose every other-end holder is
a member, a child that is a member, the process's own threads), none with a pending signal, a
POSIX timer or a handler for a signal from outside that could end its wait. The classic one: a
parent in ``waitpid`` for a child that reads a pipe only the parent could write.
"""

from __future__ import annotations

from typing import Any

from lab.backend import Backend, Gone
from lab.evidence import ProcessRecord, ThreadState
from lab.watch.judge import HARMLESS_BY_DEFAULT, OUTSIDE_SIGNALS, TIMER_SIGNALS

READS = ("read", "readv", "pread64", "preadv", "preadv2", "recvfrom", "recvmsg", "recvmmsg")
WRITES = ("write", "writev", "pwrite64", "pwritev", "pwritev2", "sendto", "sendmsg")
CHILD_WAITS = ("wait4", "waitid")
SLEEPS = ("nanosleep", "clock_nanosleep")
POLLS = ("poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait", "epoll_pwait2")
NO_TIMEOUT = (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)  # poll/epoll's -1 as /proc shows it
MAX_ENDED_BY = 32  # processes named as able to end one wait
PROOF = "wait-for-cycle"  # processes[].proof of a deadlock proven across processes
CYCLE_KINDS = ("pipe-read", "pipe-write", "child-exit", "futex-private")  # untimed, resolved


def annotate(records: list[ProcessRecord], backend: Backend) -> None:
    """Fill ``waits_for`` of each record whose threads sleep in a system call."""
    if not backend.sees_syscalls:
        return
    holders: dict[str, list] = {}  # one scan of /proc per pipe, however many wait on it
    for record in records:
        if record.threads:
            record.waits_for = waits_for(record, backend, holders)


def waits_for(record: ProcessRecord, backend: Backend,
              holders: dict[str, list] | None = None) -> list[dict[str, Any]]:
    """The distinct waits of ``record``'s sleeping threads, each with who could end it
    (``holders``: the descriptors open on each pipe, filled as they are looked up)."""
    found: dict[tuple, dict[str, Any]] = {}
    holders = {} if holders is None else holders
    for thread in record.threads:
        entry = _wait(record, thread, backend, holders)
        if entry is None:
            continue
        key = (entry["kind"], repr(sorted(entry["object"].items())))
        if key in found:
            found[key]["tids"].append(thread.tid)
        else:
            entry["tids"] = [thread.tid]
            found[key] = entry
    return list(found.values())


def _wait(record: ProcessRecord, thread: ThreadState, backend: Backend,
          holders: dict[str, list]) -> dict | None:
    call = thread.syscall
    if call is None or thread.state not in "SD":
        return None
    args = [int(arg, 16) for arg in call.args]
    pid = record.pid
    if call.futex is not None:
        if not call.futex.is_wait:
            return None
        others = sorted(t.tid for t in record.threads if t.tid != thread.tid)
        shared = not call.futex.private
        private_enders = [] if shared else others
        return {"kind": "futex-shared" if shared else "futex-private",
                "object": {"address": call.futex.uaddr},
                "timeout": call.futex.timeout is not None,
                "ended_by": [pid] if private_enders else [],
                "by_threads": private_enders,
                "note": ("a futex shared between processes: any process that maps it could "
                         "wake it" if shared else
                         "only a thread of this process can wake it" + (
                             "" if others else ", and it has no other thread"))}
    if call.name in READS + WRITES:
        return _descriptor_wait(pid, args[0], "read" if call.name in READS else "write",
                                backend, holders)
    if call.name in CHILD_WAITS:
        which = _signed(args[0] if call.name == "wait4" else args[1])
        children = _children(pid, backend)
        ended = [which] if which > 0 else children
        return {"kind": "child-exit", "object": {"pid": which if which > 0 else "any"},
                "timeout": False, "ended_by": ended[:MAX_ENDED_BY],
                "note": ("waits for its child to exit" if which > 0 else
                         "waits for any of its children to exit")
                + ("" if ended else "; it has no child left")}
    if call.name in SLEEPS:
        return {"kind": "sleep", "object": {}, "timeout": True, "ended_by": [pid],
                "note": "sleeps for a time: it ends by itself"}
    if call.name in POLLS:
        timeout = _poll_timeout(call.name, args)
        return {"kind": "epoll" if call.name.startswith("epoll") else "poll",
                "object": {"fd": args[0]} if call.name.startswith("epoll") else {},
                "timeout": timeout, "ended_by": [],
                "note": "waits on a set of descriptors" + (
                    ", with a timeout" if timeout else ", without a timeout")}
    return None


def _descriptor_wait(pid: int, fd: int, how: str, backend: Backend,
                     holders: dict[str, list]) -> dict:
    target = backend.fd_target(pid, fd)
    kind = "pipe" if target and target.startswith("pipe:") else \
        "socket" if target and target.startswith("socket:") else "file"
    entry = {"kind": f"{kind}-{how}" if kind == "pipe" else kind,
             "object": {"fd": fd, "inode": _inode(target)} if target else {"fd": fd},
             "timeout": False, "ended_by": []}
    if kind != "pipe":
        entry["note"] = (f"{how}s {target or f'descriptor {fd}'}"
                         + ("; its peer is not resolved" if kind == "socket" else ""))
        return entry
    other = "w" if how == "read" else "r"  # who holds the other end
    if target not in holders:
        holders[target] = backend.holders(target)
    ends = [(holder, mode) for holder, _, mode in holders[target]]
    able = sorted({holder for holder, mode in ends if other in mode or mode == "?"})
    entry["ended_by"] = able[:MAX_ENDED_BY]
    end = "write" if how == "read" else "read"
    entry["note"] = (f"{how}s pipe {fd} ({target}); " + (
        f"its {end} end is held by PID {', '.join(map(str, able))}" if able else
        f"no process holds its {end} end: the {how} "
        + ("returns end of file" if how == "read" else "fails with EPIPE")))
    return entry


def _children(pid: int, backend: Backend) -> list[int]:
    try:
        return sorted(backend.children(pid))
    except (Gone, PermissionError):
        return []


def _inode(target: str | None) -> int | None:
    if target and "[" in target:
        try:
            return int(target.split("[", 1)[1].rstrip("]"))
        except ValueError:
            return None
    return None


def _signed(value: int) -> int:
    """A pid_t argument (32 bits, as a register holds it) as a signed number."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _poll_timeout(name: str, args: list[int]) -> bool:
    if name in ("poll",):
        return args[2] not in NO_TIMEOUT
    if name in ("epoll_wait", "epoll_pwait", "epoll_pwait2"):
        return args[3] not in NO_TIMEOUT
    return bool(args[4] if name in ("select", "pselect6") else args[2])  # a timeout pointer


def cycle(records: list[ProcessRecord], backend: Backend) -> dict[str, Any] | None:
    """The largest set of processes that wait only for each other, forever, with the edges
    (who waits for whom, and why); None when there is none of two processes or more."""
    by_pid = {r.pid: r for r in records}
    members = {r.pid for r in records if _stuck_for_good(r, backend)}
    changed = True
    while changed:  # drop whoever could be woken by someone outside the set
        changed = False
        for pid in sorted(members):
            waits = by_pid[pid].waits_for
            if any(not set(w["ended_by"]) or not set(w["ended_by"]) <= members for w in waits):
                members.discard(pid)
                changed = True
    graph = {pid: {o for w in by_pid[pid].waits_for for o in w["ended_by"] if o != pid}
             for pid in members}
    members = {pid for group in _strongly_connected(graph) if len(group) > 1 for pid in group}
    if len(members) < 2:
        return None  # a process that waits for a deadlocked one is not itself in a cycle
    edges = []
    for pid in sorted(members):
        for wait in by_pid[pid].waits_for:
            for other in wait["ended_by"]:
                if other != pid and other in members:
                    edges.append({"from": pid, "to": other, "kind": wait["kind"],
                                  "reason": _reason(pid, other, wait, by_pid)})
    return {"members": sorted(members), "edges": edges,
            "summary": "; ".join(edge["reason"] for edge in edges)}


def prove(records: list[ProcessRecord], backend: Backend) -> dict[str, Any] | None:
    """Find a cycle among ``records`` (their ``waits_for`` filled) and give each member the
    verdict ``deadlock`` with the proof; return the cycle (None when there is none)."""
    found = cycle(records, backend)
    if found is None:
        return None
    for record in records:
        if record.pid in found["members"]:
            record.verdict, record.proof = "deadlock", PROOF
            record.detail = ("deadlock proven across processes: every thread waits, with no "
                             "timeout, for what only another process of the cycle could do, "
                             "and none can be woken from outside: " + found["summary"])
    return found


def _stuck_for_good(record: ProcessRecord, backend: Backend) -> bool:
    """Every thread in an untimed wait of a kind whose enders are known, and nothing from
    outside (a signal, a timer) that could end it."""
    waits = record.waits_for
    if not waits or not record.threads:
        return False
    waiting = {tid for wait in waits for tid in wait["tids"]}
    if waiting != {t.tid for t in record.threads}:
        return False
    if any(w["kind"] not in CYCLE_KINDS or w["timeout"] for w in waits):
        return False
    return _wakeup(backend.signals(record.pid)) is None


def _wakeup(signals) -> str | None:
    """What from outside could end a wait in read(2) or wait4(2) (EINTR, then the handler)."""
    if signals is None:
        return "its signals cannot be read"
    pending = [s for s in signals.pending if s not in signals.blocked and s not in
               signals.ignored and (s in signals.caught or s not in HARMLESS_BY_DEFAULT)]
    if pending:
        return f"{', '.join(pending)} pending"
    if any(len(t.split()) > 1 and t.split()[1] not in signals.blocked + signals.ignored
           for t in signals.timers):
        return "a POSIX timer"
    handled = [s for s in (*TIMER_SIGNALS, *OUTSIDE_SIGNALS)
               if s in signals.caught and s not in signals.blocked]
    return f"a handler for {', '.join(handled)}" if handled else None


def _reason(pid: int, other: int, wait: dict, by_pid: dict) -> str:
    kind = wait["kind"]
    if kind == "child-exit":
        return f"PID {pid} waits for PID {other} to exit"
    if kind in ("pipe-read", "pipe-write"):
        fd = wait["object"].get("fd")
        holders = wait["ended_by"]
        only = "only " if len(holders) == 1 else ""
        end = "writer" if kind == "pipe-read" else "reader"
        verb = "reads" if kind == "pipe-read" else "writes"
        return (f"PID {pid} {verb} pipe {fd} whose {only}{end}"
                f"{'s are' if len(holders) > 1 else ' is'} PID "
                f"{', '.join(map(str, holders))}")
    return f"PID {pid} waits on a futex only PID {other} could wake"


def _strongly_connected(graph: dict[int, set[int]]) -> list[set[int]]:
    """Tarjan's strongly connected components of a small graph, without recursion."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    groups: list[set[int]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in graph), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups
