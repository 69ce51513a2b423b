"""SIGINT/SIGTERM during a process start: held back until the process is owned, never inherited."""

import sys
import textwrap

import pytest

from conftest import REPO, SHORT_TIMEOUT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/status")

# The signal arrives inside the block, as if between Popen's fork and the caller's assignment.
PROGRAM = textwrap.dedent("""
    import os, signal, subprocess, sys
    from lab import interrupts
    from lab.errors import Interrupted

    interrupts.install()
    child = None
    try:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIG{name})
            child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE)
            print("block finished", flush=True)
        print("not interrupted", flush=True)
    except Interrupted as exc:
        print("interrupted", exc.exit_status, "child", child is not None, flush=True)
        with open(f"/proc/{{child.pid}}/status") as handle:
            ignored = next(line for line in handle if line.startswith("SigIgn:"))
        print("child ignores", ignored.split()[1], flush=True)
        child.terminate()
        print("child status", child.wait(), flush=True)
""")


@pytest.mark.parametrize("name, status", [("INT", 130), ("TERM", 143)],
                         ids=["signal=SIGINT", "signal=SIGTERM"])
def test_an_interrupt_inside_deferred_is_raised_after_the_block(reaper, name, status):
    # GIVEN a process that gets the signal inside deferred(), then starts a child there
    result = reaper.run([sys.executable, "-c", PROGRAM.format(name=name)],
                        timeout=SHORT_TIMEOUT, cwd=REPO)
    lines = result.stdout.splitlines()
    # THEN the block ran to its end, and Interrupted came after it, with the child known
    assert lines[:2] == ["block finished", f"interrupted {status} child True"], result.stderr
    # AND the child does not inherit an ignored SIGINT/SIGTERM: SIGTERM still stops it
    ignored = int(lines[2].split()[-1], 16)
    assert not ignored & (1 << (2 - 1)) and not ignored & (1 << (15 - 1)), lines[2]
    assert lines[3] == "child status -15"


SWALLOWED = textwrap.dedent("""
    import os, signal
    from lab import interrupts
    from lab.errors import Interrupted

    interrupts.install()
    interrupts.check()  # nothing received yet: no effect
    try:  # a library's, or a best-effort step's, broad except
        os.kill(os.getpid(), signal.SIGTERM)
        print("not interrupted", flush=True)
    except Exception as exc:
        print("swallowed", type(exc).__name__, flush=True)
    try:
        interrupts.check()
        print("check passed", flush=True)
    except Interrupted as exc:
        print("raised again", exc.exit_status, flush=True)
""")


def test_an_interrupt_that_something_swallowed_is_raised_again_at_the_next_check(reaper):
    # GIVEN a process whose SIGTERM lands inside an `except Exception` that swallows it
    result = reaper.run([sys.executable, "-c", SWALLOWED], cwd=REPO, timeout=SHORT_TIMEOUT)
    # WHEN the lab next checks (its wait loop, the next trial)
    # THEN the interrupt is raised again, with the signal's exit status: it is not lost
    assert result.stdout.split("\n")[:2] == ["swallowed Interrupted", "raised again 143"], (
        result.stdout + result.stderr)
