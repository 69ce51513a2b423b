"""`lab report RUN_DIR`: a bug report of a run the test records itself, with no secret in it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import PROGRAMS, SHORT_TIMEOUT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the lab records runs on Linux")

# Planted in the run's environment and on its command line; none may reach any file.
SECRETS = {
    "OPENAI_API_KEY": "sk-planted0123456789abcdefXYZ",
    "GITHUB_TOKEN": "plantedgithubtoken0987",
    "DB_SECRET": "planted-db-secret-4242",
    "PASSWORD": "planted-password-1717",
}
ARG_PASSWORD = "hunter2-planted-arg"
URL_PASSWORD = "planted-url-pw-5151"


def _all_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text(errors="replace")
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def recorded_run(reaper, tmp_path):
    """A deadlock recorded by `lab watch` (gdb when it is here), with secrets planted."""
    debugger = "gdb" if shutil.which("gdb") else "none"
    env = {**os.environ, **SECRETS}
    result = reaper.lab("watch", "--debugger", debugger, "--timeout", "60", "--out",
                        str(tmp_path), "--", sys.executable, str(PROGRAMS / "lock_held_at_fork.py"),
                        f"--password={ARG_PASSWORD}",
                        f"https://user:{URL_PASSWORD}@example.invalid/db", env=env)
    assert result.returncode == 12, result.stderr  # deadlock
    [run_dir] = [d for d in tmp_path.iterdir() if d.is_dir()]
    return run_dir, debugger


def test_report_has_the_decoded_futex_and_no_secret(reaper, recorded_run):
    run_dir, debugger = recorded_run
    # WHEN the report is written, by a lab that has the secrets in its own environment too
    result = reaper.lab("report", str(run_dir), env={**os.environ, **SECRETS},
                        timeout=SHORT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    report = run_dir / "report.md"
    assert result.stdout.strip() == str(report)
    text = report.read_text()
    # THEN it has the blocking call decoded from /proc, the verdict and the environment
    assert "FUTEX_WAIT_BITSET_PRIVATE" in text and "NULL (wait forever)" in text
    assert "`futex(0x" in text
    assert "Observed **deadlock**" in text
    assert "glibc" in text and "Python 3." in text
    assert "## How to reproduce" in text and "python -m lab watch" in text
    if debugger == "gdb":  # the top frames: libc's futex wait, the Python line that blocks
        assert "futex" in text.split("## Stacks", 1)[1]
        assert 'lock_held_at_fork.py", line 29, in main' in text
    # AND no planted secret is in any file of the run directory, report.md included
    planted = [*SECRETS.values(), ARG_PASSWORD, URL_PASSWORD]
    leaks = {name: [s for s in planted if s in body]
             for name, body in _all_files(run_dir).items()}
    assert not any(leaks.values()), leaks
    assert "report.md" in _all_files(run_dir)
    # AND the masks are there where the secrets were
    assert "--password=***REDACTED***" in text


def test_report_names_the_fix_the_matrix_measured(reaper, tmp_path):
    # GIVEN matrix results for the fixed twin on this platform, one trial
    results = tmp_path / "results"
    matrix = reaper.lab("matrix", "--trials", "1", "--only", "python-lock-reinit/fork",
                        "--results-dir", str(results), "--docs-dir", str(tmp_path / "docs"),
                        "--out", str(tmp_path / "m"))
    assert matrix.returncode == 0, matrix.stderr
    # AND a run of the broken scenario
    run = reaper.lab("run", "python-lock-held", "--launcher", "fork", "--debugger", "none",
                     "--quiet", "--out", str(tmp_path / "runs"))
    assert run.returncode == 0, run.stderr
    [run_dir] = list((tmp_path / "runs").iterdir())
    # WHEN the report is written against those results
    result = reaper.lab("report", str(run_dir), "--results-dir", str(results),
                        timeout=SHORT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    text = (run_dir / "report.md").read_text()
    # THEN the fix is the twin the matrix saw work, with its trial count
    fix = text.split("## The fix that worked", 1)[1].split("##", 1)[0]
    assert "Measured by `lab matrix`" in fix
    assert "the fixed twin `python-lock-reinit`: `fork` (1/1)" in fix
    # AND the threads the child did not inherit, and the reproduce command for the scenario
    assert "the child did not inherit" in text and "lock-holder" in text
    assert "python -m lab run python-lock-held --launcher fork" in text
    evidence = json.loads((run_dir / "evidence.json").read_text())
    assert evidence["verdict"] == "deadlock"


@pytest.mark.parametrize("make_dir", ["missing", "empty", "garbage"])
def test_report_of_no_run_is_one_line_and_exit_2(reaper, tmp_path, make_dir):
    target = tmp_path / "run"
    if make_dir != "missing":
        target.mkdir()
    if make_dir == "garbage":
        (target / "evidence.json").write_text("not json")
    result = reaper.lab("report", str(target), timeout=SHORT_TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.startswith("lab: error: ") and result.stderr.count("\n") == 1
    assert not (target / "report.md").exists()


def test_report_lists_the_run_dir_it_was_given_not_the_one_recorded(reaper, tmp_path):
    # GIVEN a recorded run, moved to another directory
    result = reaper.lab("watch", "--debugger", "none", "--json", "--quiet", "--timeout", "60",
                        "--out", str(tmp_path / "runs"), "--", sys.executable,
                        str(PROGRAMS / "lock_held_at_fork.py"))
    assert result.returncode == 12, result.stderr  # deadlock
    recorded = Path(json.loads(result.stdout)["evidence_dir"])
    moved = Path(shutil.move(recorded, tmp_path / "moved"))
    # AND its evidence.json naming, as its evidence_dir, another directory that has files
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "not-of-this-run.txt").write_text("")
    evidence = json.loads((moved / "evidence.json").read_text())
    (moved / "evidence.json").write_text(json.dumps({**evidence,
                                                     "evidence_dir": str(elsewhere)}))
    # WHEN the report of the moved run is written
    report = reaper.lab("report", str(moved), timeout=SHORT_TIMEOUT)
    assert report.returncode == 0, report.stderr
    # THEN it lists the files of the directory it was given, and nothing of the other one
    files = (moved / "report.md").read_text().split("## Files in this bundle", 1)[1]
    listed = files.strip().split(" (run id ", 1)[0]
    assert listed == ", ".join(f"`{f.name}`" for f in sorted(moved.iterdir()))
    assert "`summary.md`" in listed and "not-of-this-run" not in files
