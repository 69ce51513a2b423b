"""The lab's fork hook inside a watched Python process: threads and stacks at each fork, crashes."""

# Loaded by the lab's sitecustomize, before the program's own code. It must never change what
# the program does: it starts no thread, installs no signal handler, imports nothing of the
# program's, and swallows its own errors. At each os.fork() (os.register_at_fork(before=...),
# the last "before" hook to run, so the closest to the fork) it reports the forking thread and
# every other thread, with its Python stack, on the lab's report channel (lab/reports.py,
# loaded by path: the program may not be able to import the lab, or may have a `lab` of its
# own). faulthandler writes to a file of this process in the run's directory, not to the
# stderr pipe that every process of the tree shares.
import os
import sys

FAULT_DIR_VAR = "LAB_FAULT_DIR"  # lab.hook.FAULT_DIR_VAR
REPORT_VAR = "LAB_REPORT_FIFO"  # lab.reports.ENV_VAR
REPORT_DIR_VAR = "LAB_REPORT_DIR"  # lab.reports.DIR_VAR
GUARD_VAR = "LAB_FORK_GUARD"  # lab.guard.MODE_VAR: `lab guard` asks for the fork guard
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)  # POSIX's
MAX_FRAMES = 40  # per thread, innermost first: the lock a thread holds is near the top
MAX_THREADS = 256
_state = {"reports": None, "fault_fd": None}


def install():
    """Send faulthandler's output to this process's file; report every fork."""
    if not hasattr(os, "register_at_fork"):
        return  # no fork() here (Windows): nothing to report, and a spawned child is hooked too
    if os.environ.get(FAULT_DIR_VAR) and "PYTHONFAULTHANDLER" not in os.environ:
        if _faults_to_file():
            os.register_at_fork(after_in_child=_after_in_child)
    if os.environ.get(REPORT_VAR) or os.environ.get(REPORT_DIR_VAR):
        os.register_at_fork(before=_before)
    if os.environ.get(GUARD_VAR) in ("warn", "strict"):
        _install_guard(os.environ[GUARD_VAR])


def _install_guard(mode):
    """The fork guard (lab.guard) in this process. It needs the lab's own package: where the
    program has a ``lab`` of its own, the guard is not loaded, and says so once."""
    from importlib.util import find_spec

    root = os.path.dirname(_lab_dir())
    theirs = find_spec("lab")
    if theirs is not None and os.path.dirname(os.path.dirname(theirs.origin or "")) != root:
        os.write(2, b"lab: guard: not active in this process: the program has a package "
                    b"named lab of its own\n")
        return
    sys.path.insert(0, root)
    try:
        from lab import guard
    finally:
        sys.path.remove(root)
    guard.install(mode, on_fork=_guard_report)


def _guard_report(fork):
    """A risky fork, as it happens: one block on stderr, and a report for the evidence."""
    text = "".join(f"lab: guard: {line}\n" for line in fork.text().splitlines())
    os.write(2, text.encode("utf-8", "replace"))
    reports = _reports()
    reports.send(reports.Event.GUARD, pid=os.getpid(), fork=fork.to_dict())


def _lab_dir():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _faults_to_file():
    import faulthandler

    if _state["fault_fd"] is None and faulthandler.is_enabled():
        return False  # -X faulthandler: the program's own choice, on its stderr
    path = os.path.join(os.environ[FAULT_DIR_VAR], f"fault-{os.getpid()}.txt")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _CLOEXEC, 0o600)
    faulthandler.enable(fd, all_threads=True)
    old, _state["fault_fd"] = _state["fault_fd"], fd
    if old is not None:
        os.close(old)  # the parent's file: the child must not write its crash there
    return True


def _after_in_child():
    # Only system calls here: a lock another thread of the parent held is still held.
    try:
        import faulthandler

        if faulthandler.is_enabled():  # unless the program turned it off
            _faults_to_file()
    except Exception:
        pass


def _before():
    try:
        _report_fork()
    except Exception:
        pass  # a fork hook's exception is only printed by CPython; ours must not even print


def _report_fork():
    frames = sys._current_frames()  # first: the stacks as near the fork as can be
    import _thread
    import time

    t_ns = time.monotonic_ns()
    me, me_native = _thread.get_ident(), _native_id(_thread)
    named = {}  # ident -> (name, native id); threading is asked only if the program uses it
    threading = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            named[thread.ident] = (thread.name, getattr(thread, "native_id", None))
    by_native = {native: ident for ident, (_, native) in named.items() if native}
    ours = _before.__code__.co_filename
    threads, listed, my_comm = [], {me}, None
    for tid, comm in _tasks():
        if tid == me_native:
            my_comm = comm
            continue
        entry = {"tid": tid, "name": comm}
        ident = by_native.get(tid)
        if ident is not None:
            listed.add(ident)
            entry["python_name"] = named[ident][0]
            entry["frames"] = _stack(frames.get(ident), ours)
        threads.append(entry)
    for ident, frame in frames.items():  # Python threads /proc did not list (no /proc here)
        if ident not in listed:
            name, native = named.get(ident, (None, None))
            threads.append({"tid": native, "name": name or "?", "python_name": name,
                            "frames": _stack(frame, ours)})
    forking = {"tid": me_native, "name": my_comm or named.get(me, ("?",))[0],
               "python_name": named.get(me, (None,))[0], "frames": _stack(frames.get(me), ours)}
    reports = _reports()
    reports.send(reports.Event.FORK, pid=os.getpid(), tid=me_native, t_ns=t_ns, source="hook",
                 cwd=_cwd(), forking_thread=forking, threads=threads[:MAX_THREADS])


def _native_id(_thread):
    if hasattr(_thread, "get_native_id"):
        return _thread.get_native_id()
    try:  # Python 3.7
        return int(os.readlink("/proc/thread-self").rsplit("/", 1)[-1])
    except (OSError, ValueError):
        return None


def _tasks():
    try:
        entries = os.listdir("/proc/self/task")
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            fd = os.open(f"/proc/self/task/{entry}/comm", os.O_RDONLY | _CLOEXEC)
        except OSError:
            continue  # it exited while we listed
        try:
            found.append((int(entry), os.read(fd, 64).decode("utf-8", "replace").strip()))
        except OSError:
            pass
        finally:
            os.close(fd)
    return sorted(found)


def _stack(frame, skip):
    """[file, line, function] per frame, most recent call first, the hook's own left out."""
    found = []
    while frame is not None and len(found) < MAX_FRAMES:
        code = frame.f_code
        if code.co_filename != skip:
            found.append([code.co_filename, frame.f_lineno, code.co_name])
        frame = frame.f_back
    return found


def _cwd():
    try:
        return os.getcwd()  # relative file names in the stacks are relative to it
    except OSError:
        return None


def _reports():
    module = _state["reports"]
    if module is None:
        from importlib.util import module_from_spec, spec_from_file_location

        spec = spec_from_file_location("_lab_reports", os.path.join(_lab_dir(), "reports.py"))
        module = module_from_spec(spec)
        spec.loader.exec_module(module)
        _state["reports"] = module
    return module
