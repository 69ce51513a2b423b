"""Bad input gets one line on stderr and a distinct non-zero exit, never a traceback."""

import json
import multiprocessing as mp
import os
import sys

import pytest

from conftest import PROGRAMS, REPO


def assert_one_line_error(result, status, *words):
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("lab: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_unknown_scenario(reaper):
    assert_one_line_error(reaper.lab("run", "no-such-scenario"), 2, "unknown scenario",
                          "chromadb-tokio")


def test_unknown_launcher(reaper):
    assert_one_line_error(reaper.lab("run", "chromadb-tokio", "--launcher", "teleport"), 2,
                          "unknown launcher")


def test_unknown_debugger(reaper):
    assert_one_line_error(reaper.lab("watch", "--debugger", "windbg", "--", "true"), 2, "windbg")


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_timeout(reaper, value):
    assert_one_line_error(reaper.lab("watch", "--timeout", value, "--", "true"), 2, "timeout")


def test_command_not_found_keeps_evidence(reaper, tmp_path):
    result = reaper.lab("watch", "--out", str(tmp_path), "--", "no-such-command-xyz")
    assert_one_line_error(result, 4, "command not found", "no-such-command-xyz")
    [evidence_file] = tmp_path.glob("*/evidence.json")
    evidence = json.loads(evidence_file.read_text())
    assert evidence["error"].startswith("command not found")


def test_no_command(reaper):
    assert_one_line_error(reaper.lab("watch", "--"), 2, "no command")


@pytest.mark.skipif(os.geteuid() == 0 and not os.path.exists("/usr/bin/setpriv"),
                    reason="needs a directory root cannot write to")
def test_unwritable_out_dir(reaper, tmp_path):
    target = "/proc/lab-cannot-write-here"
    assert_one_line_error(reaper.lab("watch", "--out", target, "--", "true"), 2, "cannot write")


def test_list_json_names_the_scenario_and_its_expectation(reaper):
    result = reaper.lab("list", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    expected = dict(rows["chromadb-tokio"]["expected"])
    # mp-default expects what the start method a user gets without choosing one expects
    assert expected.pop("mp-default") == expected[f"mp-{mp.get_all_start_methods()[0]}"]
    assert expected == {
        "fork": "deadlock", "mp-fork": "deadlock", "pool-fork": "deadlock",
        "mp-forkserver": "ok", "mp-spawn": "ok", "pool-spawn": "ok"}
    assert rows["python-lock-reinit"]["fixed_of"] == "python-lock-held"
    assert rows["chromadb-tokio"]["runnable"] is (sys.platform == "linux")


def test_secrets_in_the_environment_and_argv_are_redacted(reaper, tmp_path):
    env = {**os.environ, "OPENAI_API_KEY": "sk-planted0123456789abcdef",
           "DATABASE_URL": "postgres://user:hunter2@db/x"}
    result = reaper.lab("watch", "--json", "--quiet", "--out", str(tmp_path), "--",
                        sys.executable, "-c", "print('hello')", "--token=abc123secret", env=env)
    assert result.returncode == 0, result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            text = path.read_text()
            for secret in ("sk-planted0123456789abcdef", "hunter2", "abc123secret"):
                assert secret not in text, f"{secret} leaked into {path.name}"
    assert "sk-planted" not in result.stdout


# Each subcommand's defaults, as parsed: argparse shares a parent parser's actions, so a
# default set for one subcommand once leaked into all (`watch` ran without a debugger).
@pytest.mark.parametrize("argv, debugger", [
    (["run", "chromadb-tokio"], "auto"),
    (["watch", "--", "true"], "auto"),
    (["inspect", "1"], "auto"),
    (["matrix"], "none"),
    (["matrix", "--debugger", "gdb"], "gdb"),
    (["watch", "--debugger", "none", "--", "true"], "none"),
])
def test_each_subcommand_parses_its_own_defaults(argv, debugger, monkeypatch):
    from lab.cli import build_parser
    from lab.matrix.run import MatrixOptions
    from lab.options import InspectOptions, RunOptions

    monkeypatch.delenv("LAB_CRASH_DUMPS", raising=False)
    parser = build_parser()
    for other in (["matrix"], ["watch", "--", "true"]):  # parsing a sibling changes nothing
        parser.parse_args(other)
    args = parser.parse_args(argv)
    assert args.debugger == debugger
    kind = {"inspect": InspectOptions, "matrix": MatrixOptions}.get(argv[0], RunOptions)
    options = kind.from_args(args)
    assert (options.debugger, options.timeout, str(options.out_base)) == (
        debugger, None, "crash_dumps")
    assert isinstance(options, RunOptions)


def test_the_entry_points_offer_the_registry_debuggers():
    from lab import debuggers
    from lab.celery_lab.__main__ import _parser as celery_parser
    from lab.cli import build_parser
    from lab.parsers.kinds import KINDS

    offered = {"auto", *debuggers.names(), "none"}
    sub = build_parser()._subparsers._group_actions[0].choices
    for name in ("run", "watch", "inspect", "matrix"):
        (action,) = [a for a in sub[name]._actions if a.dest == "debugger"]
        assert set(action.choices) == offered, name
    (action,) = [a for a in celery_parser()._actions if a.dest == "debugger"]
    assert set(action.choices) == offered
    assert set(debuggers.names()) < set(KINDS)


def test_watch_attaches_a_debugger_by_default(reaper, tmp_path):
    from lab import debuggers

    result = reaper.lab("watch", "--json", "--quiet", "--out", str(tmp_path), "--",
                        sys.executable, str(PROGRAMS / "lock_held_at_fork.py"))
    evidence = json.loads(result.stdout)
    assert evidence["verdict"] == "deadlock", result.stderr
    assert evidence["debugger"]["name"] in debuggers.names(), evidence["debugger"]


def test_every_option_of_every_subcommand_is_documented():
    from lab.cli import build_parser

    reference = (REPO / "docs" / "CLI.md").read_text()
    front = (REPO / "README.md").read_text()
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        assert f"python -m lab {name}" in front, f"the README names no `{name}`"
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in reference, f"docs/CLI.md does not name {name} {option}"
