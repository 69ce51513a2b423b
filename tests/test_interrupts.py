"""SIGINT/SIGTERM to the lab: the tree is stopped, evidence says "interrupted", exit 130/143."""

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import PROGRAMS, SHORT_TIMEOUT, descendants

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux /proc")


def wait_for_blocked_descendant(pid: int, syscall_nr: str, deadline_s: float = SHORT_TIMEOUT):
    """Wait until a descendant of ``pid`` sits in syscall ``syscall_nr`` (a state, not a sleep)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for kid in descendants(pid):
            try:
                with open(f"/proc/{kid}/syscall") as handle:
                    if handle.read().split()[0] == syscall_nr:
                        return kid
            except (FileNotFoundError, IndexError, ProcessLookupError):
                continue
        time.sleep(0.01)  # polling /proc with a deadline
    pytest.fail(f"no descendant of {pid} reached syscall {syscall_nr} in {deadline_s} s")


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["signal=SIGINT", "signal=SIGTERM"])
def test_signal_while_the_child_is_blocked(reaper, tmp_path, sig, status):
    # GIVEN lab watch following a child blocked forever in read() on a pipe
    lab = reaper.popen([sys.executable, "-m", "lab", "watch", "--json", "--debugger", "none",
                        "--timeout", "120", "--out", str(tmp_path), "--", sys.executable,
                        str(PROGRAMS / "pipe_wait.py")],
                       cwd=str(PROGRAMS.parents[1]), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    blocked = wait_for_blocked_descendant(lab.pid, "0")  # 0 = read on x86_64
    # WHEN the lab gets the signal
    lab.send_signal(sig)
    out, err = lab.communicate(timeout=SHORT_TIMEOUT)
    # THEN it exits 128 + signal, with one error line and no traceback
    assert lab.returncode == status, err
    assert "Traceback" not in err
    # AND the evidence file, and stdout (--json), are valid JSON that says interrupted
    [path] = tmp_path.glob("*/evidence.json")
    evidence = json.loads(path.read_text())
    assert json.loads(out)["verdict"] == "interrupted"
    assert evidence["verdict"] == "interrupted" and evidence["complete"]
    assert any(p["pid"] == blocked and p["killed_by_lab"] for p in evidence["processes"])
    # AND the blocked child is gone (the autouse fixture checks every other process)
    with pytest.raises(FileNotFoundError):
        open(f"/proc/{blocked}/stat").read()
