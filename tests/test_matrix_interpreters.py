"""`lab matrix --python` across interpreters, partial runs merged cell by cell, `mp-default`,
and CPython's fork DeprecationWarning as the matrix records it: all on real runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHORT_TIMEOUT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the lab runs scenarios on Linux")

COMMITTED = REPO / "results" / "linux-x86_64-py3.11.json"
# Lock cells need no package: a second interpreter's environment is a bare venv (seconds).
LOCKS = "python-lock-*"


def _other_python() -> str | None:
    """A CPython >= 3.12 other than the lab's own (its fork warning is what is recorded)."""
    from lab import interpreters
    from lab.errors import BadInput

    for version in ("3.12", "3.13"):
        if sys.version.startswith(version + "."):
            continue
        try:
            return interpreters.resolve(version)
        except BadInput:
            continue
    return None


@pytest.fixture(scope="module")
def other_python():
    python = _other_python()
    if python is None:
        pytest.skip("no CPython 3.12 or 3.13 besides the lab's own (on PATH, pyenv or uv)")
    return python


def _dirs(tmp_path: Path) -> list[str]:
    return ["--results-dir", str(tmp_path / "results"), "--docs-dir", str(tmp_path / "docs"),
            "--out", str(tmp_path / "dumps"), "--env-dir", str(tmp_path / "envs")]


def _rows(path: Path) -> dict[str, dict]:
    return {f"{r['scenario']}/{r['launcher']}": r for r in json.loads(path.read_text())["rows"]}


def _minor(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, timeout=SHORT_TIMEOUT, check=True)
    return out.stdout.strip()


def test_two_interpreters_each_get_a_results_file_and_a_panel(reaper, tmp_path, other_python):
    # GIVEN the lock cells, one trial each, under the lab's own Python and a CPython >= 3.12
    # (its environment created for the test, from nothing)
    ours = "{}.{}".format(*sys.version_info[:2])
    theirs = _minor(other_python)
    result = reaper.lab("matrix", "--trials", "1", "--only", LOCKS, "--python",
                        f"{sys.executable},{other_python}", *_dirs(tmp_path), timeout=600)
    # THEN both ran as expected, with no traceback
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"creating the environment of Python {theirs}" in result.stderr
    # AND each has its own results file, its cells run in that interpreter
    mine = _rows(tmp_path / "results" / f"linux-{_machine()}-py{ours}.json")
    other_file = tmp_path / "results" / f"linux-{_machine()}-py{theirs}.json"
    other = _rows(other_file)
    doc = json.loads(other_file.read_text())
    assert doc["platform"]["python"].startswith(theirs + ".")
    assert doc["platform"]["interpreter"].startswith(str(tmp_path / "envs"))
    for rows in (mine, other):
        held = rows["python-lock-held/fork"]
        assert held["status"] == "run" and held["counts"] == {"deadlock": 1}
        assert rows["python-lock-reinit/fork"]["counts"] == {"ok": 1}
        assert rows["chromadb-tokio/fork"]["status"] == "not-run"
    # AND the fork warning is recorded where CPython has it, with the threads it counted
    warned = other["python-lock-held/fork"]["fork_warning"]
    assert warned["fired"] == 1 and warned["threads"] >= 2
    assert other["python-lock-held/mp-spawn"]["fork_warning"] == {"fired": 0, "threads": None}
    # AND the docs show one panel per interpreter, each table with its warning column
    md = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert f"## linux-{_machine()}-py{ours}" in md and f"## linux-{_machine()}-py{theirs}" in md
    panel = md.split(f"## linux-{_machine()}-py{theirs}")[1]
    line = next(li for li in panel.splitlines() if li.startswith("| python-lock-held | fork |"))
    assert f"| 1/1 ({warned['threads']} threads) |" in line
    # AND the same verdicts under both: no differences (the older one's silence is not compared)
    assert "## Differences between interpreters\n\nNone: every cell" in md
    _differences_are_called_out(doc, tmp_path)


def _differences_are_called_out(doc: dict, tmp_path: Path) -> None:
    """The real rows of one interpreter, filed again under another version with one cell's row
    swapped for its fixed twin's (compare reads ids and rows, never how they were made)."""
    from lab.matrix import merge

    rows = [dict(r) for r in doc["rows"]]
    held = next(r for r in rows if (r["scenario"], r["launcher"]) == ("python-lock-held", "fork"))
    twin = next(r for r in rows if (r["scenario"], r["launcher"]) == ("python-lock-reinit",
                                                                      "fork"))
    warned_before = held["fork_warning"]["fired"]
    held.update(counts=twin["counts"], observed=twin["observed"],
                fork_warning=twin["fork_warning"])
    other_id = doc["platform"]["id"].rsplit("-py", 1)[0] + "-py3.99"
    other = {**doc, "rows": rows, "platform": {**doc["platform"], "id": other_id,
                                               "python": "3.99.0"}}
    merged = merge.merge([(Path("a.json"), doc), (Path("b.json"), other)])
    [diff] = merged["differences"]
    assert (diff["scenario"], diff["launcher"]) == ("python-lock-held", "fork")
    assert diff["differs"] == ["verdict"] + (["warning"] if bool(twin["fork_warning"]["fired"])
                                             != bool(warned_before) else [])
    md = merge.write_docs(merged, tmp_path / "diff")[0].read_text()
    table = md.split("## Differences between interpreters")[1]
    assert "| python-lock-held | fork | verdict" in table and "py3.99: ok 1" in table


def _machine() -> str:
    import platform

    return platform.machine()


def test_a_partial_run_merges_into_the_committed_file_cell_by_cell(reaper, tmp_path):
    # GIVEN this platform's committed results (5 trials per cell, an earlier date)
    from lab.matrix.run import platform_doc

    if platform_doc()["id"] != COMMITTED.stem:
        pytest.skip(f"the committed results are of {COMMITTED.stem}, not this platform")
    (tmp_path / "results").mkdir()
    shutil.copy(COMMITTED, tmp_path / "results")
    before = _rows(COMMITTED)
    # WHEN one cell is re-run with one trial
    result = reaper.lab("matrix", "--trials", "1", "--only", "python-lock-held/fork",
                        *_dirs(tmp_path))
    assert result.returncode == 0, result.stderr
    after = _rows(tmp_path / "results" / COMMITTED.name)
    doc = json.loads((tmp_path / "results" / COMMITTED.name).read_text())
    # THEN that cell has its one new trial, dated with the new run
    cell = after["python-lock-held/fork"]
    assert cell["trials"] == 1 and cell["ran"] == doc["run"]["started"]
    # AND every other measured cell keeps its own trials, counts, date and versions
    old_run = json.loads(COMMITTED.read_text())["run"]
    kept = [k for k, r in before.items() if r["status"] == "run" and k != "python-lock-held/fork"]
    assert kept and all(after[k]["counts"] == before[k]["counts"] for k in kept)
    assert all(after[k]["trials"] == 5 and after[k]["ran"] == old_run["started"] for k in kept)
    assert after["chromadb-tokio/fork"]["packages"]["chromadb"] == "1.5.9"
    # AND the file lists both runs, and the docs never say "1 of N cells run"
    assert [r["cells"] for r in doc["runs"]] == [len(kept), 1]
    md = (tmp_path / "docs" / "RESULTS.md").read_text()
    summary = next(li for li in md.splitlines() if li.startswith(f"| [{COMMITTED.stem}]"))
    assert f"{len(kept) + 1} of " in summary and "1 from another run" in summary


def test_a_cell_older_than_the_rest_says_so(reaper, tmp_path):
    # GIVEN one cell measured first, then three others by a later run
    first = reaper.lab("matrix", "--trials", "1", "--only", "python-lock-held/mp-fork",
                       *_dirs(tmp_path))
    assert first.returncode == 0, first.stderr
    second = reaper.lab("matrix", "--trials", "1", "--only",
                        "python-lock-held/fork,python-lock-held/mp-spawn,python-lock-reinit/fork",
                        *_dirs(tmp_path))
    assert second.returncode == 0, second.stderr
    # THEN the first cell is still there, and RESULTS.md says it is older than the rest
    [path] = (tmp_path / "results").glob("*.json")
    rows = _rows(path)
    assert rows["python-lock-held/mp-fork"]["counts"] == {"deadlock": 1}
    md = (tmp_path / "docs" / "RESULTS.md").read_text()
    line = next(li for li in md.splitlines() if li.startswith("| python-lock-held | mp-fork |"))
    assert "older than the rest" in line
    fresh = next(li for li in md.splitlines() if li.startswith("| python-lock-held | fork |"))
    assert "older" not in fresh


def test_mp_default_records_the_start_method_it_turned_out_to_be(reaper, tmp_path):
    # GIVEN the default start method of a fresh interpreter like the lab's (nothing chosen)
    method = subprocess.run(
        [sys.executable, "-c", "import multiprocessing as m; print(m.get_start_method())"],
        capture_output=True, text=True, timeout=SHORT_TIMEOUT, check=True).stdout.strip()
    # WHEN python-lock-held runs under mp-default
    result = reaper.lab("run", "python-lock-held", "--launcher", "mp-default", "--debugger",
                        "none", "--json", "--quiet", "--out", str(tmp_path))
    evidence = json.loads(result.stdout)
    # THEN the evidence names that method, and expects what that method's launcher expects
    from lab import scenarios

    assert evidence["start_method"] == method
    assert evidence["expected"] == scenarios.get("python-lock-held").expected[f"mp-{method}"]
    assert result.returncode == 0 and evidence["verdict"] == evidence["expected"]


def test_the_fork_warning_is_recorded_with_the_threads_cpython_counted(reaper, tmp_path,
                                                                        other_python):
    # GIVEN python-lock-held (one thread besides the main one holds the lock) under a CPython
    # that has the warning
    result = reaper.lab("run", "python-lock-held", "--python", other_python, "--debugger",
                        "none", "--json", "--quiet", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    evidence = json.loads(result.stdout)
    # THEN the warning carries the thread count of /proc/self/stat when it fired: the forking
    # thread and the others the fork report saw
    (warning,) = evidence["warnings"]
    assert warning["threads"] == 1 + len(evidence["parent"]["threads_at_fork"]) == 2
    # AND a trial summarises it as the matrix keeps it
    from lab.trials import fork_warning

    assert fork_warning(evidence["warnings"]) == {"times": 1, "threads": 2}
    assert fork_warning([]) is None


def test_an_unknown_interpreter_is_one_line_before_anything_runs(reaper, tmp_path):
    result = reaper.lab("matrix", "--python", f"{sys.executable},/no/such/python3",
                        *_dirs(tmp_path), timeout=SHORT_TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no such interpreter" in result.stderr
    assert not (tmp_path / "results").exists()


def test_a_pin_that_cannot_be_installed_leaves_its_cells_not_run_with_pips_line(reaper,
                                                                                tmp_path):
    # GIVEN CPython 3.10, for which polars 2.1.0 (the pin) has no distribution at all
    from lab import interpreters
    from lab.errors import BadInput

    try:
        python = interpreters.resolve("3.10")
    except BadInput:
        pytest.skip("no CPython 3.10 (on PATH, pyenv or uv)")
    # WHEN its matrix is asked for the polars cell, into a fresh environment
    result = reaper.lab("matrix", "--trials", "1", "--only", "polars/fork", "--python", python,
                        *_dirs(tmp_path), timeout=600)
    # THEN the matrix still ends as a success, the cell "not run" with pip's reason in one line
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    [path] = (tmp_path / "results").glob("*-py3.10.json")
    cell = _rows(path)["polars/fork"]
    assert cell["status"] == "not-run" and cell["counts"] == {}
    assert cell["why"].startswith("could not install polars==2.1.0 for Python 3.10.")
    assert "\n" not in cell["why"]
    # AND the failure is kept with the environment: the next run does not ask pip again
    [state] = (tmp_path / "envs").glob("*/lab-env.json")
    assert "polars==2.1.0" in json.loads(state.read_text())["failed"]
