"""The lab image's entrypoint: run the command, then give the host user what it wrote on the host.

Usage (the image's ENTRYPOINT)::

    python /usr/local/bin/lab-entrypoint COMMAND [ARG...]

The command runs as root: the debuggers need CAP_SYS_PTRACE, which Docker makes effective for
uid 0 only (see the Dockerfile). The files it writes into compose.yml's bind mounts are then
root's on a Linux host. When the command ends, however it ends, every file and directory under
the mounts that root owns and that changed since the start (its ctime) goes to LAB_OWNER
(UID:GID; the Makefile passes the caller's `id -u`:`id -g`), else to the owner of the first
mount, the evidence directory. Owner root changes nothing; a chown that fails (a Docker Desktop
file share, which maps ownership by itself) is skipped. Other owners' files are left alone.

Signals: PID 1 is docker-init (compose `init: true`); it forwards what `docker stop`, `docker
kill` or a non-terminal client's Ctrl-C sends to this process only, and this passes each on to
the command. Where a terminal is attached and this process group is in its foreground, the
terminal's own SIGINT and SIGQUIT reach the command directly, and are not sent twice.
Not a shell script: a shell without job control starts a background command with SIGINT and
SIGQUIT ignored (POSIX, "Asynchronous Lists"), and a foreground one cannot be signalled.

Exit status: the command's; 128 + N when signal N ended it; 127 when it could not be started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

# The bind mounts of compose.yml, evidence first (tests/test_docker_files.py sets its own).
MOUNTS = os.environ.get("LAB_MOUNTS", "/lab/crash_dumps /lab/results /lab/docs").split()
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)
FROM_A_TERMINAL = (signal.SIGINT, signal.SIGQUIT)  # what the terminal's keys send
# File times come from a coarse clock: a file made in the same tick as the start must count.
CLOCK_SLACK_NS = 1_000_000_000


def owner() -> tuple[int, int] | None:
    """(uid, gid) to give the files to: LAB_OWNER, else the evidence directory's owner."""
    value = os.environ.get("LAB_OWNER", "").strip()
    if value:
        uid, _, gid = value.partition(":")
        try:
            return int(uid), int(gid or uid)
        except ValueError:
            print(f"lab-entrypoint: LAB_OWNER={value!r} is not UID:GID; files stay root's",
                  file=sys.stderr)
            return None
    try:
        found = os.stat(MOUNTS[0])
    except (OSError, IndexError):
        return None
    return found.st_uid, found.st_gid


def hand_over(directories: list[str], to: tuple[int, int], since_ns: int) -> int:
    """Chown what root owns and changed since ``since_ns`` under ``directories`` (not across
    file systems, not the directories themselves); return how many paths changed owner."""
    changed = 0
    for top in directories:
        try:
            device = os.lstat(top).st_dev
        except OSError:
            continue
        for root, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if os.lstat(os.path.join(root, d)).st_dev == device]
            for name in (*subdirs, *files):
                path = os.path.join(root, name)
                try:
                    found = os.lstat(path)
                    if found.st_uid == 0 and found.st_ctime_ns >= since_ns:
                        os.lchown(path, *to)
                        changed += 1
                except OSError:
                    continue  # gone meanwhile, or a share that does not take chown
    return changed


def _terminal_in_front() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: lab-entrypoint COMMAND [ARG...]", file=sys.stderr)
        return 2
    since_ns = time.time_ns() - CLOCK_SLACK_NS
    to = owner()
    child: subprocess.Popen | None = None
    pending: list[int] = []
    terminal = _terminal_in_front()

    def forward(signum: int, _frame) -> None:
        if terminal and signum in FROM_A_TERMINAL:
            return  # the terminal sent it to the command as well
        if child is None:
            pending.append(signum)
        else:
            child.send_signal(signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    try:
        # restore_signals (the default): the command gets SIGPIPE and SIGXFSZ back.
        child = subprocess.Popen(argv)
    except OSError as exc:
        print(f"lab-entrypoint: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    for signum in pending:
        child.send_signal(signum)
    status = child.wait()
    if to is not None and to != (0, 0):
        hand_over(MOUNTS, to, since_ns)
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
