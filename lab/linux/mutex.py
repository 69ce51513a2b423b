"""A glibc ``pthread_mutex_t`` as read out of another process's memory (``Backend.read_memory``).

glibc's struct __pthread_mutex_s (sysdeps/nptl/bits/struct_mutex.h) starts, on every 64-bit
and 32-bit Linux ABI, with ``int __lock; unsigned int __count; int __owner;`` and, on 64-bit
ABIs, ``unsigned int __nusers; int __kind;``. ``__lock`` is the futex word a contended
pthread_mutex_lock() waits on (nptl/lowlevellock.c: futex_wait(&__lock, 2)), and ``__owner``
is the TID of the thread that locked it: a child forked while another thread held the mutex
inherits that TID, of a thread it does not have.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_LAYOUT = struct.Struct("<iIiIi")  # __lock, __count, __owner, __nusers, __kind (little-endian)
# __kind: the type in the low bits (nptl/pthreadP.h PTHREAD_MUTEX_KIND_MASK_NP = 3) plus flag
# bits robust (16), priority-inherit (32), priority-protect (64), process-shared (128),
# elision (256, 512).
KIND_MASK = 3
KIND_FLAGS = 16 | 32 | 64 | 128 | 256 | 512
KIND_NAMES = {0: "PTHREAD_MUTEX_NORMAL", 1: "PTHREAD_MUTEX_RECURSIVE",
              2: "PTHREAD_MUTEX_ERRORCHECK", 3: "PTHREAD_MUTEX_ADAPTIVE_NP"}


@dataclass
class MutexWords:
    lock: int
    count: int
    owner: int
    nusers: int
    kind: int

    def looks_locked(self, pid_max: int) -> bool:
        """True when the words are those of a locked glibc mutex with a plausible owner TID."""
        return (self.lock in (1, 2) and 0 < self.owner <= pid_max
                and self.kind & ~(KIND_MASK | KIND_FLAGS) == 0 and 0 <= self.count < 1 << 20)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind & KIND_MASK]


SIZE = _LAYOUT.size  # the bytes to read at a mutex's address


def parse(data: bytes | None) -> MutexWords | None:
    """The mutex words in ``data`` (SIZE bytes read at its address); None for none."""
    if data is None or len(data) < SIZE:
        return None
    return MutexWords(*_LAYOUT.unpack(data[:SIZE]))
