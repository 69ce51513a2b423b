"""What a user sees first: the story in the last lines on stderr, --version, usage and help.

Every story test runs a real program that deadlocks (or ends ok) under the real lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_inspect import deadlocked_tree

from conftest import PROGRAMS, REPO, SHORT_TIMEOUT

CONSOLE_SCRIPT = Path(sys.executable).with_name("fork-crash-lab")


def story(stderr: str) -> list[str]:
    """The lines after the last progress line (``lab: [ 1.234s] ...``)."""
    lines = stderr.splitlines()
    last = max((i for i, line in enumerate(lines) if line.startswith("lab: [")), default=-1)
    return lines[last + 1:]


def test_watch_ends_with_the_culprit_where_the_child_waits_and_the_fix(reaper, tmp_path):
    # GIVEN a program of its own: a cache whose refresher thread holds self._lock at the fork
    result = reaper.lab("watch", "--out", str(tmp_path), "--", sys.executable,
                        str(PROGRAMS / "cache_refresh_at_fork.py"))
    assert result.returncode == 12, result.stderr
    told = story(result.stderr)
    # THEN the last lines tell the story, in order, and end with the evidence path
    assert told[0].startswith("lab: deadlock: PID ") and "proven" in told[0]
    assert "thread refresher (TID " in told[1] and "`with self._lock:`" in told[1]
    assert "cache_refresh_at_fork.py:21" in told[1]
    assert told[2] == "lab: the child waits at cache_refresh_at_fork.py:26: with self._lock:"
    assert told[3].startswith("lab: fix: Re-create self._lock in the child")
    assert "os.register_at_fork(after_in_child=lambda: setattr(self, '_lock'" in told[3]
    (folder,) = tmp_path.iterdir()
    assert told[-1] == f"lab: evidence: {folder.resolve() / 'summary.md'}"
    assert len(told) <= 6  # a few lines, not a page


def test_quiet_keeps_the_terminal_silent(reaper, tmp_path):
    result = reaper.lab("watch", "--quiet", "--debugger", "none", "--out", str(tmp_path), "--",
                        sys.executable, str(PROGRAMS / "lock_held_at_fork.py"))
    assert result.returncode == 12
    assert result.stderr == ""


def test_run_of_a_native_library_names_the_threads_lost_and_the_fix(reaper, tmp_path):
    # GIVEN a child that locks a mutex a native (C) thread of its parent held at the fork
    result = reaper.lab("watch", "--debugger", "none", "--out", str(tmp_path), "--",
                        sys.executable, str(PROGRAMS / "native_mutex_held.py"))
    told = story(result.stderr)
    assert told[0].startswith("lab: deadlock: PID "), result.stderr
    assert any(line.startswith(("lab: lost at the fork: ", "lab: culprit: ")) for line in told)
    assert any(line.startswith("lab: fix: ") for line in told), told


def test_an_ok_run_says_ok_and_where_the_evidence_is(reaper, tmp_path):
    result = reaper.lab("run", "python-lock-reinit", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    told = story(result.stderr)
    assert told[0].startswith("lab: ok: ") and told[0].endswith("expected ok"), told
    assert told[-1].startswith("lab: evidence: ") and len(told) == 2


def test_inspect_ends_with_the_story_too(reaper, tmp_path):
    parent, child = deadlocked_tree(reaper, "lock_held_at_fork.py")
    result = reaper.lab("inspect", str(parent), "--debugger", "none", "--out", str(tmp_path),
                        timeout=SHORT_TIMEOUT * 4)
    assert result.returncode == 12, result.stderr
    told = story(result.stderr)
    assert told[0].startswith(f"lab: deadlock: PID {child}")
    assert any("lock_held_at_fork.py:29" in line for line in told), told
    assert told[-1].startswith("lab: evidence: ")


@pytest.mark.parametrize("argv", [[sys.executable, "-m", "lab"], [str(CONSOLE_SCRIPT)]],
                         ids=["python -m lab", "console script"])
def test_version_prints_the_name_and_version(reaper, argv):
    if not Path(argv[0]).exists():
        pytest.skip("the console script is not installed")
    result = reaper.run([*argv, "--version"], cwd=REPO, timeout=SHORT_TIMEOUT)
    assert result.returncode == 0
    name, version = result.stdout.split()
    assert name == "fork-crash-lab" and version[0].isdigit()


def test_usage_shows_the_name_the_user_typed(reaper):
    if not CONSOLE_SCRIPT.exists():
        pytest.skip("the console script is not installed")
    result = reaper.run([str(CONSOLE_SCRIPT), "watch", "--help"], cwd=REPO,
                        timeout=SHORT_TIMEOUT)
    assert result.stdout.startswith("usage: fork-crash-lab watch ")
    module = reaper.lab("watch", "--help", timeout=SHORT_TIMEOUT)
    assert module.stdout.startswith("usage: python -m lab watch ")


@pytest.mark.parametrize("command, statuses", [
    ("watch", ["0 ok", "12 deadlock", "13 hang", "2 bad input", "6 ptrace refused"]),
    ("run", ["0 the observed verdict is the expected one", "1 it is not"]),
    ("inspect", ["12 deadlock", "16 no such process", "17 a zombie", "18 the lab itself"]),
    ("parse", ["0", "2 bad input"]),
    ("matrix", ["1 a cell"]),
])
def test_each_subcommand_help_lists_its_exit_statuses(command, statuses):
    from lab.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices[command]
    text = " ".join(sub.format_help().split())
    assert "exit status: " in text
    for status in statuses:
        assert status in text, (command, status)


@pytest.mark.parametrize("typo, meant", [("--timout=3", "--timeout"),
                                         ("--debuger=none", "--debugger"), ("--jsno", "--json")])
def test_a_mistyped_option_names_the_closest_one(reaper, typo, meant):
    result = reaper.lab("watch", typo, "--", "true", timeout=SHORT_TIMEOUT)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert f"did you mean {meant}?" in line, line


def test_the_json_document_is_unchanged_by_the_story(reaper, tmp_path):
    result = reaper.lab("watch", "--json", "--debugger", "none", "--out", str(tmp_path), "--",
                        sys.executable, str(PROGRAMS / "lock_held_at_fork.py"))
    evidence = json.loads(result.stdout)
    assert evidence["verdict"] == "deadlock"
    assert story(result.stderr)[-1].startswith("lab: evidence: ")
    assert os.path.isfile(story(result.stderr)[-1].split(": ", 2)[2])


def test_a_bug_report_describes_the_programs_interpreter_not_the_labs(reaper, tmp_path):
    # GIVEN a program run by an interpreter of its own, which has none of the lab's packages
    venv = tmp_path / "app-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    out = tmp_path / "runs"
    result = reaper.lab("watch", "--debugger", "none", "--out", str(out), "--", str(python),
                        str(PROGRAMS / "lock_held_at_fork.py"))
    assert result.returncode == 12, result.stderr
    (folder,) = out.iterdir()
    evidence = json.loads((folder / "evidence.json").read_text())
    platform = evidence["platform"]
    # THEN the packages are the program's (none the lab knows), its interpreter is named,
    # and the lab's own are kept aside in evidence.json
    assert platform["interpreter"] == str(python)
    assert "chromadb" not in platform["packages"] and "lab" not in platform["packages"]
    assert platform["lab_packages"].get("lab")
    # AND the report leaves out what the lab set, and shortens the home directory
    assert reaper.lab("report", str(folder)).returncode == 0
    report = (folder / "report.md").read_text()
    env_line = next(line for line in report.splitlines() if "relevant environment" in line) \
        if "relevant environment" in report else ""
    assert "LAB_" not in env_line and "hook/startup" not in env_line
    home = str(Path.home()) + os.sep
    shown = str(python).replace(home, "~" + os.sep) if str(python).startswith(home) else python
    assert f"the program's interpreter: `{shown}`" in report
    assert "LAB_RUN_ID" in evidence["lab_environment"]
    assert "LAB_RUN_ID" in evidence["environment"]  # everything stays in evidence.json


def test_parse_points_only_to_files_it_wrote(reaper, tmp_path):
    from conftest import DATA

    transcript = str(DATA / "gdb-chromadb-x86_64.txt")
    plain = reaper.lab("parse", "gdb", transcript, timeout=SHORT_TIMEOUT)
    assert plain.returncode == 0 and "more frames with --json" in plain.stdout
    assert "evidence.json" not in plain.stdout and list(tmp_path.iterdir()) == []
    out = tmp_path / "parsed"
    written = reaper.lab("parse", "gdb", transcript, "--out", str(out), timeout=SHORT_TIMEOUT)
    assert written.returncode == 0, written.stderr
    assert f"more frames in {out / 'evidence.json'}" in written.stdout
    assert json.loads((out / "evidence.json").read_text())["debugger"]["name"] == "gdb"


def test_a_pools_own_terminate_reads_ok(reaper, tmp_path):
    # GIVEN a program whose pool terminates its busy workers (SIGTERM from their parent)
    result = reaper.lab("watch", "--debugger", "none", "--out", str(tmp_path), "--",
                        sys.executable, str(PROGRAMS / "pool_terminated_ok.py"))
    assert result.returncode == 0, result.stderr
    (folder,) = tmp_path.iterdir()
    evidence = json.loads((folder / "evidence.json").read_text())
    workers = [r for r in evidence["processes"] if r["signal"] == "SIGTERM"]
    # THEN each worker is ok, named as stopped by its pool, not as a signal from nowhere
    assert workers, evidence["processes"]
    for worker in workers:
        assert worker["verdict"] == "ok" and "terminate()" in worker["detail"]
        assert "did not send" not in worker["detail"]
    summary = (folder / "summary.md").read_text()
    assert "is blocked in" not in summary and "wait forever" not in summary


WRAPPER = """#!/usr/bin/env bash
# An interpreter shim of the kind pyenv installs: helpers first, then exec the interpreter.
set -e
program="$(basename "$0")"
version="$(cat /dev/null; echo 3)"
for hook in one two three four five; do
  found="$(command -v true >/dev/null && echo "$hook")"
done
[ -n "$program" ] && [ -n "$version" ] && [ -n "$found" ]
exec {python} "$@"
"""


def test_an_interpreter_shim_is_folded_into_the_program_it_became(reaper, tmp_path):
    # GIVEN a bash wrapper that runs helpers, then execs the real interpreter
    shim = tmp_path / "python"
    shim.write_text(WRAPPER.format(python=sys.executable))
    shim.chmod(0o755)
    out = tmp_path / "runs"
    result = reaper.lab("watch", "--debugger", "none", "--out", str(out), "--", str(shim),
                        str(PROGRAMS / "lock_held_at_fork.py"))
    assert result.returncode == 12, result.stderr
    # THEN the fork line names the program's thread, not the shell's
    (fork_line,) = [line for line in result.stderr.splitlines() if "] fork " in line]
    assert fork_line.endswith("threads the child does not inherit: holder"), fork_line
    # AND the helpers are counted in one line, the table lists the program's processes
    (folder,) = out.iterdir()
    summary = (folder / "summary.md").read_text()
    table = summary.split("## Processes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line[:3] == "| " + line[2:3]
            and line[2:3].isdigit()]
    evidence = json.loads((folder / "evidence.json").read_text())
    assert len(evidence["processes"]) > 5  # the helpers ran, and evidence.json keeps them
    assert "helper processes that ended as their parents expect" in summary
    assert len([r for r in rows if "deadlock" in r or "hang" in r]) == 2
    assert len(rows) <= 3, rows
