"""Read ``strace -f -tt -T -o FILE`` output: the last system calls of one process."""

from __future__ import annotations

TAIL_LINES = 20


def tail_of(text: str, pid: int, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines strace wrote for ``pid`` (each line starts with the pid).

    The last one of a blocked process is its unfinished call, e.g.
    ``futex(0x55d…, FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME, 0, NULL,
    FUTEX_BITSET_MATCH_ANY <unfinished ...>``.
    """
    prefix = f"{pid} "
    mine = [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]
    return mine[-lines:]
