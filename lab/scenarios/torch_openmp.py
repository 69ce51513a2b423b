"""PyTorch CPU intra-op threads (GNU OpenMP) at fork: the child's next parallel op never returns.

``torch.set_num_threads(N > 1)`` and one parallel op make libgomp keep a team of N-1 worker
threads in the parent. The child inherits libgomp's pool bookkeeping but not the threads, so
its first parallel region waits at the team barrier for workers that do not exist. How it
waits is libgomp's wait policy (measured here, torch 2.13.0+cpu, its bundled libgomp):

- default policy: a short spin, then ``futex(FUTEX_WAIT_PRIVATE, timeout NULL)`` in
  ``gomp_team_barrier_wait_end`` — blocked at 0 % CPU, a provable deadlock;
- ``OMP_WAIT_POLICY=ACTIVE``: a spin of up to 3e10 iterations before any futex — the child
  runs at 100 % CPU and never finishes: a livelock (``hang``, detail "livelock"). libgomp
  throttles that spin to 1000 iterations when it manages more threads than there are CPUs,
  so the spinning twin uses 2 threads (this needs at least 2 CPUs).

libgomp's workers do not name themselves: they keep the process's comm (``python``).
"""

from __future__ import annotations

import os

from lab.scenarios import Scenario, with_mp_default

THREADS = 4
SPIN_THREADS = 2
# 1 Mi elements: far above ATen's grain size (32768), so ``x * 2`` opens an OpenMP region.
ELEMENTS = 1 << 20
FORK_ROWS = ("fork", "mp-fork", "pool-fork")
SPAWN_ROWS = {"mp-spawn": "ok", "mp-forkserver": "ok", "pool-spawn": "ok"}


def parallel_op(tensor) -> float:
    """An element-wise op big enough to run on every intra-op thread; returns its sum."""
    return float((tensor * 2).sum())


def _warm(threads: int):
    import torch

    torch.set_num_threads(threads)
    tensor = torch.ones(ELEMENTS)
    total = parallel_op(tensor)
    print(f"parent {os.getpid()}: torch {torch.__version__}, {torch.get_num_threads()} "
          f"intra-op threads, parallel op = {total:g}", flush=True)
    return tensor


def prepare():
    return _warm(THREADS)


def spin_prepare():
    return _warm(SPIN_THREADS)


def single_prepare():
    tensor = _warm(THREADS)
    import torch

    # The fix: the child inherits a team size of 1, so its ops run on the calling thread
    # and never wait for libgomp's workers, which it does not have.
    torch.set_num_threads(1)
    return tensor


def handoff(state, pickles: bool):
    """Forked children use the inherited tensor; pickling launchers get the thread count."""
    if not pickles:
        return state
    import torch

    return torch.get_num_threads()


def child(payload):
    import torch

    tensor = payload
    if isinstance(payload, int):  # pickled: as many threads as the parent had at launch
        if torch.get_num_threads() != payload:
            # Only a fresh interpreter differs; resizing an inherited team would be a
            # different hazard (libgomp starts new workers beside the vanished ones).
            torch.set_num_threads(payload)
        tensor = torch.ones(ELEMENTS)
    print(f"child {os.getpid()}: parallel op on {torch.get_num_threads()} thread(s)", flush=True)
    print(f"child {os.getpid()}: parallel op = {parallel_op(tensor):g}", flush=True)


OPENMP_THREADS = Scenario(
    name="openmp-threads",
    summary="torch.set_num_threads(4) and a parallel op before fork: the child's parallel op "
            "waits forever at libgomp's team barrier (blocked in a private futex: deadlock).",
    expected=with_mp_default({**dict.fromkeys(FORK_ROWS, "deadlock"), **SPAWN_ROWS}),
    prepare=prepare,
    child=child,
    handoff=handoff,
    requires=("torch",),
    expected_threads=("python",),
    fix="spawn or forkserver (a fresh libgomp), or torch.set_num_threads(1) before fork",
    default_timeout=30.0,
)

OPENMP_SPIN = Scenario(
    name="openmp-threads-spin",
    summary="openmp-threads with OMP_WAIT_POLICY=ACTIVE and 2 threads: the child spins at "
            "100 % CPU at the team barrier and never finishes (livelock: hang).",
    # its spawn rows: see openmp-threads
    expected=with_mp_default(dict.fromkeys(FORK_ROWS, "hang")),
    prepare=spin_prepare,
    child=child,
    handoff=handoff,
    requires=("torch",),
    expected_threads=("python",),
    env={"OMP_WAIT_POLICY": "ACTIVE"},
    # From launch: torch's import and the parent's warm-up, then a few seconds of spinning.
    default_timeout=8.0,
)

OPENMP_SINGLE = Scenario(
    name="openmp-single-thread",
    summary="Fixed twin of openmp-threads: torch.set_num_threads(1) before fork; the child's "
            "op runs on the calling thread alone and returns.",
    expected=with_mp_default(dict.fromkeys(FORK_ROWS, "ok")),  # its spawn rows: see openmp-threads
    prepare=single_prepare,
    child=child,
    handoff=handoff,
    requires=("torch",),
    expected_threads=("python",),
    fixed_of="openmp-threads",
    fix="torch.set_num_threads(1) in the parent before fork",
    default_timeout=30.0,
)
