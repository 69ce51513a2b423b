"""The deadlock proof and the hang descriptions, on recorded and built samples."""

from lab.evidence import ThreadState
from lab.linux import syscalls
from lab.watch import judge

FOREVER = "202 0x561d7adc21d0 0x89 0xa5 0x0 0x0 0xffffffff 0x7ffc43e2ee38 0x7f8d4e51f829"
TIMED = "202 0x561d7adc21d0 0x89 0x1 0x7ffc43e2e000 0x0 0xffffffff 0x7ffc43e2ee38 0x7f8d4e"
SHARED = "202 0x561d7adc21d0 0x9 0xa5 0x0 0x0 0xffffffff 0x7ffc43e2ee38 0x7f8d4e51f829"
READ = "0 0x3 0x7ffc43e2e000 0x1000 0x0 0x0 0x0 0x7ffc43e2ee38 0x7f8d4e51f829"


def thread(line, tid=100, switches=5, state="S", ticks=10):
    return ThreadState(tid=tid, name="python", state=state, wchan="futex_do_wait",
                       syscall=syscalls.parse_proc_syscall(line, "x86_64"),
                       voluntary_ctxt_switches=switches, cpu_ticks=ticks)


def feed(watch, samples, step=0.02):
    proven_at = None
    for i, threads in enumerate(samples):
        if watch.feed(i * step, threads) and proven_at is None:
            proven_at = i * step
    return proven_at


def test_wait_forever_is_proven_after_the_stable_window():
    watch = judge.DeadlockWatch()
    proven_at = feed(watch, [[thread(FOREVER)]] * 10)
    assert proven_at is not None and proven_at >= judge.STABLE_S


def test_not_proven_before_the_stable_window():
    watch = judge.DeadlockWatch()
    assert feed(watch, [[thread(FOREVER)]] * 3) is None


def test_a_wakeup_between_samples_restarts_the_proof():
    # GIVEN the thread's voluntary context switches change: it woke up and went back to sleep
    samples = [[thread(FOREVER, switches=5 + i)] for i in range(10)]
    assert feed(judge.DeadlockWatch(), samples) is None


def test_timed_futex_wait_is_never_a_deadlock():
    assert feed(judge.DeadlockWatch(), [[thread(TIMED)]] * 20) is None


def test_shared_futex_is_never_a_deadlock():
    # another process could wake a shared futex
    assert feed(judge.DeadlockWatch(), [[thread(SHARED)]] * 20) is None


def test_one_thread_in_read_means_no_deadlock():
    samples = [[thread(FOREVER, tid=100), thread(READ, tid=101)]] * 20
    assert feed(judge.DeadlockWatch(), samples) is None


def test_spinning_process_is_described_as_livelock():
    watch = judge.DeadlockWatch()
    for i in range(10):
        watch.feed(i * 0.1, [thread("running", state="R", ticks=10 + 10 * i)])
    assert judge.describe_unfinished(watch).startswith("livelock")


def test_pipe_wait_is_described_as_blocked_reading():
    watch = judge.DeadlockWatch()
    for i in range(10):
        watch.feed(i * 0.1, [thread(READ)])
    text = judge.describe_unfinished(watch)
    assert text.startswith("blocked, not a proven deadlock") and "read" in text
