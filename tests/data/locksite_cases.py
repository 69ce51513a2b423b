# Never run: tests/test_fork_hook.py asks lab.locksite which lock a frame at each line held.
import threading

lock = threading.Lock()
cond = threading.Condition()


def in_with():
    with lock:
        work()  # line 10: holds `lock`


def waits_on_its_condition():
    with cond:
        cond.wait()  # line 15: Condition.wait releases it


def acquired():
    lock.acquire()
    try:
        work()  # line 21: holds `lock`
    finally:
        lock.release()


def released():
    lock.acquire()
    lock.release()
    work()  # line 29: holds nothing


def nested_def():
    with lock:
        def later():
            return work()  # line 35: runs later, outside the with
        return later


def not_a_lock():
    with open(__file__) as handle:
        work(handle)  # line 41: a file is no lock


def work(*args):
    return args
