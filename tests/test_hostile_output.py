"""Output the lab did not expect: one huge line, a flood, a full disk; and evidence kept private.

Each test runs a real program under `lab watch`; the autouse fixture in conftest.py fails any
test that leaves a process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROGRAMS, REPO, SHORT_TIMEOUT
from lab import output

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the watcher reads /proc")

LAB = [sys.executable, "-m", "lab"]
ONE_LINE = "import sys; sys.stdout.write('a.' * ({mib} << 19)); sys.stdout.flush()"
FLOOD = ("import sys\nline = b'0123456789.' * 9 + b'\\n'\n"
         "for _ in range(({mib} << 20) // len(line)): sys.stdout.buffer.write(line)\n")


def _evidence(out: Path) -> dict:
    [path] = out.glob("*/evidence.json")
    return json.loads(path.read_text())


def test_one_huge_line_is_cut_and_the_run_ends_on_its_own(reaper, tmp_path):
    # GIVEN a program that prints 64 MiB on one line, without a newline
    # WHEN the lab watches it
    result = reaper.lab("watch", "--debugger", "none", "--json", "--quiet", "--timeout", "60",
                        "--out", str(tmp_path), "--", sys.executable, "-c", ONE_LINE.format(mib=64))
    # THEN it is judged ok, and output.txt holds the line cut at MAX_LINE, with a note
    assert result.returncode == 0, result.stderr
    evidence = json.loads(result.stdout)
    assert evidence["output"]["bytes_read"] == 64 << 20
    assert evidence["output"]["lines_cut"] == 1
    text = (Path(evidence["evidence_dir"]) / "output.txt").read_text()
    assert len(text) < output.MAX_LINE + 200 and "[lab: line cut at" in text


def test_sigterm_during_a_flood_of_one_line_stops_the_lab_at_once(reaper, tmp_path):
    # GIVEN the lab watching a program that prints one endless line
    endless = "import sys\nwhile True: sys.stdout.write('x' * 65536)\n"
    lab = reaper.popen([*LAB, "watch", "--debugger", "none", "--timeout", "120", "--out",
                        str(tmp_path), "--", sys.executable, "-c", endless], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # (the launch line is the handshake: the program runs from here on)
    line = lab.stderr.readline()
    assert "] launch" in line, line
    # WHEN SIGTERM reaches the lab
    lab.send_signal(signal.SIGTERM)
    _, err = lab.communicate(timeout=SHORT_TIMEOUT)
    # THEN it ends with 143 and valid, interrupted evidence, well before --timeout
    assert lab.returncode == 143, err
    evidence = _evidence(tmp_path)
    assert evidence["verdict"] == "interrupted" and evidence["complete"]


def test_a_flood_keeps_the_head_and_the_tail_of_the_output(reaper, tmp_path):
    # GIVEN a program that prints 40 MiB of short lines
    result = reaper.lab("watch", "--debugger", "none", "--json", "--quiet", "--timeout", "120",
                        "--out", str(tmp_path), "--", sys.executable, "-c", FLOOD.format(mib=40))
    # THEN it is ok, all of it was read, and output.txt keeps the head and the tail only
    assert result.returncode == 0, result.stderr
    evidence = json.loads(result.stdout)
    kept = evidence["output"]
    assert kept["bytes_read"] >= 39 << 20 and kept["dropped_bytes"] > 20 << 20
    path = Path(evidence["evidence_dir"]) / "output.txt"
    assert path.stat().st_size < output.HEAD_BYTES + output.TAIL_BYTES + (1 << 20)
    assert "bytes of output dropped here" in path.read_text()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                    reason="mounting a tiny tmpfs needs root")
def test_a_full_disk_still_gives_the_verdict_and_a_distinct_status(reaper, tmp_path):
    # GIVEN --out on a 64 KiB tmpfs and a program that deadlocks after printing 1 MiB
    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True, text=True, timeout=SHORT_TIMEOUT)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    program = tmp_path / "print_then_deadlock.py"
    program.write_text("import sys, runpy\nsys.stdout.write('y' * 79 + '\\n' * 1)\n"
                       "sys.stdout.write(('z' * 99 + '\\n') * 10_000)\nsys.stdout.flush()\n"
                       f"runpy.run_path({str(PROGRAMS / 'lock_held_at_fork.py')!r}, "
                       "run_name='__main__')\n")
    try:
        # WHEN the lab watches it
        result = reaper.lab("watch", "--debugger", "none", "--json", "--timeout", "60",
                            "--out", str(disk), "--", sys.executable, str(program))
    finally:
        subprocess.run(["umount", "-l", str(disk)], timeout=SHORT_TIMEOUT, check=False)
    # THEN the verdict is on stderr and in the JSON, with one clear error line and status 15
    assert result.returncode == 15, result.stderr
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("lab: error:")]
    assert "verdict deadlock" in error and "No space left" in error
    assert json.loads(result.stdout)["verdict"] == "deadlock"


def test_evidence_is_private(reaper, tmp_path):
    # GIVEN a deadlocking program watched with GDB and --gcore
    if not shutil.which("gdb"):
        pytest.skip("gdb is not installed")
    result = reaper.lab("watch", "--debugger", "gdb", "--gcore", "--json", "--quiet",
                        "--out", str(tmp_path), "--", sys.executable,
                        str(PROGRAMS / "lock_held_at_fork.py"))
    assert result.returncode == 12, result.stderr
    run = Path(json.loads(result.stdout)["evidence_dir"])
    # THEN the run directory is 0700 and what holds the program's memory or output is 0600
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    private = [run / "output.txt", run / "gdb.txt", *run.glob("core.*")]
    assert len(private) == 3, sorted(p.name for p in run.iterdir())
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


@pytest.mark.parametrize("kind", ["file", "dangling-symlink"])
def test_out_that_is_not_a_directory_says_so(reaper, tmp_path, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("not a directory")
    else:
        out.symlink_to(tmp_path / "nowhere")
    result = reaper.lab("watch", "--out", str(out), "--", "true")
    assert result.returncode == 2, result.stderr
    wanted = "not a directory" if kind == "file" else "dangling symbolic link"
    assert wanted in result.stderr and "--run-id" not in result.stderr


def test_timeout_holds_during_an_endless_line(reaper, tmp_path):
    # GIVEN a program that prints one endless line WHEN --timeout 3 passes
    endless = "import sys\nwhile True: sys.stdout.write('x' * 65536)\n"
    result = reaper.lab("watch", "--debugger", "none", "--json", "--quiet", "--timeout", "3",
                        "--out", str(tmp_path), "--", sys.executable, "-c", endless,
                        timeout=SHORT_TIMEOUT)
    # THEN it is a hang (status 13) judged at the timeout, its output read and cut
    assert result.returncode == 13, result.stderr
    evidence = json.loads(result.stdout)
    assert 3.0 <= evidence["detect_s"] < SHORT_TIMEOUT
    assert evidence["output"]["lines_cut"] == 1 and evidence["output"]["bytes_read"] > 0
