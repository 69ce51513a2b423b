"""`lab matrix` on a small subset for real, `lab matrix merge`, the PNG, the workflow it runs in."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SHORT_TIMEOUT

linux = pytest.mark.skipif(sys.platform != "linux", reason="the lab runs scenarios on Linux")

# Two fast cells without ChromaDB: a proven deadlock and its fixed twin.
SUBSET = "python-lock-held/fork,python-lock-reinit/fork"
WORKFLOW = REPO / ".github" / "workflows" / "matrix.yml"
RECORDED = REPO / "tests" / "data" / "lldb-arm64-macos-trap.txt"


def _dirs(tmp_path: Path) -> list[str]:
    return ["--results-dir", str(tmp_path / "results"), "--docs-dir", str(tmp_path / "docs"),
            "--out", str(tmp_path / "dumps")]


@pytest.fixture
def subset(reaper, tmp_path):
    """`lab matrix --trials 2 --only SUBSET` into tmp_path: (completed process, results doc)."""
    result = reaper.lab("matrix", "--trials", "2", "--only", SUBSET, *_dirs(tmp_path))
    files = list((tmp_path / "results").glob("*.json"))
    doc = json.loads(files[0].read_text()) if len(files) == 1 else None
    return result, doc


@linux
def test_subset_writes_results_markdown_and_a_png(subset, tmp_path):
    # GIVEN the matrix on two cells, two trials each
    result, doc = subset
    # THEN it exits 0 (both cells as expected) with no traceback
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # AND one results file named after this platform, with one row per catalog cell
    from lab.matrix.run import platform_doc

    platform_id = platform_doc()["id"]
    assert (tmp_path / "results" / f"{platform_id}.json").is_file()
    assert doc["schema"] == "lab-matrix/1" and doc["platform"]["id"] == platform_id
    assert doc["run"]["complete"] and doc["run"]["trials"] == 2
    rows = {(r["scenario"], r["launcher"]): r for r in doc["rows"]}
    held = rows[("python-lock-held", "fork")]
    fixed = rows[("python-lock-reinit", "fork")]
    assert held["status"] == "run" and held["counts"] == {"deadlock": 2} and held["rate"] == 1.0
    assert fixed["status"] == "run" and fixed["counts"] == {"ok": 2}
    assert held["median_detect_s"] > 0 and Path(held["evidence"]).is_file()
    # AND the cells it was not asked to run are marked so, never filled in
    other = rows[("chromadb-tokio", "fork")]
    assert other["status"] == "not-run" and other["counts"] == {} and other["rate"] is None
    assert "--only" in other["why"]
    # AND a progress line per trial: cell, trial k/N, verdict, seconds
    assert "python-lock-held/fork trial 2/2: deadlock in " in result.stderr
    # AND the Markdown has the platform's table with the example evidence linked
    md = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert f"## {platform_id}" in md
    line = next(li for li in md.splitlines() if li.startswith("| python-lock-held | fork |"))
    assert "deadlock 2" in line and "1.00 (2)" in line
    example = tmp_path / "docs" / held["example"]
    assert example.is_file() and "deadlock" in example.read_text()
    assert f"]({held['example']})" in line
    # AND the PNG opens: a panel for the platform that ran, the others one strip of text
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "docs" / "matrix.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300


@linux
def test_merge_of_two_platform_files_marks_the_unrun_one(subset, reaper, tmp_path):
    # GIVEN this platform's real results file, and the same measurements filed under an
    # arm64 platform id (merge reads the id, never the values: this only gives it two files)
    _, doc = subset
    ours = next((tmp_path / "results").glob("*.json"))
    other_id = "linux-aarch64-py3.11" if doc["platform"]["id"] != "linux-aarch64-py3.11" \
        else "linux-x86_64-py3.11"
    theirs = tmp_path / "other" / f"{other_id}.json"
    theirs.parent.mkdir()
    theirs.write_text(json.dumps({**doc, "platform": {**doc["platform"], "id": other_id}}))
    # WHEN they are merged, with no recorded transcript
    docs = tmp_path / "merged"
    result = reaper.lab("matrix", "merge", "--docs-dir", str(docs), "--recorded", "none",
                        "--json", str(ours), str(theirs), timeout=SHORT_TIMEOUT * 2)
    assert result.returncode == 0, result.stderr
    merged = json.loads(result.stdout)
    # THEN both platforms are there as run, and the third known one is "not run here"
    states = {p["id"]: p["state"] for p in merged["platforms"]}
    assert states[doc["platform"]["id"]] == "run" and states[other_id] == "run"
    assert states["darwin-arm64-py3.11"] == "not run here"
    # AND its only cells are the catalog's darwin predictions, none counted as a result
    [darwin] = [p for p in merged["platforms"] if p["id"] == "darwin-arm64-py3.11"]
    assert {r["status"] for r in darwin["rows"]} == {"predicted"}
    assert all(not r["counts"] and r["rate"] is None for r in darwin["rows"])
    assert ("chromadb-tokio", "mp-fork", "crash") in {
        (r["scenario"], r["launcher"], r["expected"]) for r in darwin["rows"]}
    md = (docs / "RESULTS.md").read_text()
    assert "| chromadb-tokio | mp-fork | crash | not run; predicted crash from the mechanism" in md
    assert md.count("| python-lock-held | fork | deadlock | deadlock 2 |") == 2
    assert "**Not run here**" in md
    assert (docs / "matrix.png").stat().st_size > 10_000


@linux
def test_merge_skips_other_tools_files_in_results(subset, reaper, tmp_path):
    # GIVEN results/ with this platform's file and another tool's JSON (a soak report)
    ours = next((tmp_path / "results").glob("*.json"))
    soak = tmp_path / "results" / "soak-linux-x86_64-py3.11.json"
    soak.write_text(json.dumps({"scenario": "chromadb-tokio", "runs": 5}))
    # WHEN `lab matrix merge results/*.json` runs THEN the soak file is skipped, said so
    result = reaper.lab("matrix", "merge", "--docs-dir", str(tmp_path / "d"), str(ours),
                        str(soak), timeout=SHORT_TIMEOUT * 2)
    assert result.returncode == 0, result.stderr
    assert f"skipped: {soak} is not a `lab matrix` results file" in result.stderr


def test_merge_refuses_bad_files_in_one_line(reaper, tmp_path):
    not_json = tmp_path / "linux-x86_64-py3.11.json"
    not_json.write_text("{")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"rows": []}))
    for files in ([str(not_json)], [str(wrong)], [str(tmp_path / "missing.json")]):
        result = reaper.lab("matrix", "merge", "--docs-dir", str(tmp_path / "d"), *files,
                            timeout=SHORT_TIMEOUT)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("lab: error: ") and result.stderr.count("\n") == 1


@linux
def test_two_files_of_one_platform_are_refused(subset, reaper, tmp_path):
    ours = next((tmp_path / "results").glob("*.json"))
    copy = tmp_path / "copy.json"
    shutil.copy(ours, copy)
    result = reaper.lab("matrix", "merge", "--docs-dir", str(tmp_path / "d"), str(ours),
                        str(copy), timeout=SHORT_TIMEOUT)
    assert result.returncode == 2 and "two results files for platform" in result.stderr


@linux
def test_the_png_is_deterministic(subset, tmp_path):
    from lab.matrix import merge, plot

    _, doc = subset
    merged = merge.merge([(Path("x.json"), doc)], recorded=None)
    first = plot.write_png(merged, tmp_path / "a.png").read_bytes()
    second = plot.write_png(merged, tmp_path / "b.png").read_bytes()
    assert first == second
    assert first.startswith(b"\x89PNG") and b"matplotlib" not in first  # no version stamp


needs_recorded = pytest.mark.skipif(not RECORDED.is_file(), reason="tests/data/lldb-arm64-"
                                    "macos-trap.txt has not landed (the LLDB issue adds it)")


@needs_recorded
def test_a_hand_built_transcript_is_shown_but_counts_as_nothing(tmp_path):
    from lab.matrix import merge

    # GIVEN the macOS transcript in tests/data, whose header says it was built by hand
    assert "Hand-built, not captured" in RECORDED.read_text().splitlines()[0]
    # WHEN it is merged as the recorded source
    merged = merge.merge([], recorded=RECORDED)
    darwin = next(p for p in merged["platforms"] if p["id"].startswith("darwin-arm64-"))
    # THEN the macOS cell names its source and what it shows, and observes nothing
    assert darwin["state"] == "not run here"
    [row] = [r for r in darwin["rows"] if r["status"] != "predicted"]
    assert row["status"] == "illustrative" and row["source"] == str(RECORDED.relative_to(REPO))
    assert row["shows"] == "crash" and "EXC_BREAKPOINT" in row["stop_reason"]
    assert row["observed"] is None and row["counts"] == {} and row["rate"] is None
    md_path, _ = merge.write_docs(merged, tmp_path)
    md = md_path.read_text()
    assert "hand-built transcript" in md and "lldb-arm64-macos-trap.txt" in md


@needs_recorded
def test_a_captured_transcript_is_a_recorded_verdict(tmp_path):
    from lab.matrix import merge

    # GIVEN the same LLDB session without the header that says it was built by hand
    body = [li for li in RECORDED.read_text().splitlines() if not li.startswith("#")]
    captured = tmp_path / "lldb-captured.txt"
    captured.write_text("\n".join(body) + "\n")
    # WHEN it is merged THEN it is a recorded crash, with its source, in the macOS panel
    merged = merge.merge([], recorded=captured)
    darwin = next(p for p in merged["platforms"] if p["id"].startswith("darwin-arm64-"))
    [row] = [r for r in darwin["rows"] if r["status"] != "predicted"]
    assert row["status"] == "recorded" and row["observed"] == "crash"
    assert row["counts"] == {"crash": 1} and row["source"] == str(captured)
    md = merge.write_docs(merged, tmp_path / "docs")[0].read_text()
    assert "(recorded: EXC_BREAKPOINT" in md


@pytest.mark.parametrize("args, complaint", [
    (["--only", "no-such-cell"], "matches no cell"),
    (["--trials", "0"], "must be at least 1"),
    (["--recorded", "/no/such/file"], "no such file"),
], ids=["only=nothing", "trials=0", "recorded=missing"])
def test_bad_input_is_one_line_and_exit_2(reaper, tmp_path, args, complaint):
    result = reaper.lab("matrix", *args, *_dirs(tmp_path), timeout=SHORT_TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.startswith("lab: error: ") and complaint in result.stderr
    assert result.stderr.count("\n") == 1


def _read_until(proc: subprocess.Popen, needle: str, timeout: float = SHORT_TIMEOUT * 2) -> str:
    """stderr of ``proc`` up to the first line containing ``needle`` (a handshake)."""
    fd, data, end = proc.stderr.fileno(), b"", time.monotonic() + timeout
    while needle.encode() not in data:
        left = end - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            pytest.fail(f"no {needle!r} on stderr within {timeout} s: {data.decode()}")
        if select.select([fd], [], [], left)[0]:
            data += os.read(fd, 65536)
    return data.decode()


@linux
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["signal=SIGINT", "signal=SIGTERM"])
def test_an_interrupted_matrix_keeps_its_results(reaper, tmp_path, sig, status):
    # GIVEN a matrix of 5 trials per cell that has finished its first trial
    lab = reaper.popen([sys.executable, "-m", "lab", "matrix", "--trials", "5", "--only",
                        "python-lock-held/*", *_dirs(tmp_path)], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _read_until(lab, "trial 1/5")
    # WHEN it gets the signal
    lab.send_signal(sig)
    lab.wait(timeout=SHORT_TIMEOUT)
    err = lab.stderr.read().decode()
    # THEN it exits 128 + signal with one error line, no traceback
    assert lab.returncode == status, err
    assert "Traceback" not in err and f"lab: error: interrupted by {sig.name}" in err
    # AND the results file is valid JSON that keeps the trials done and marks the rest
    [path] = (tmp_path / "results").glob("*.json")
    doc = json.loads(path.read_text())
    assert doc["run"]["complete"] is False
    cells = [r for r in doc["rows"] if r["scenario"] == "python-lock-held"]
    assert cells[0]["status"] == "interrupted" and cells[0]["trials"] >= 1
    assert cells[0]["counts"].get("deadlock", 0) >= 1
    assert all(r["status"] == "not-run" and "interrupted" in r["why"] for r in cells[1:])
    assert not [r for r in doc["rows"] if r["status"] == "pending"]
    # AND no process is left (the autouse fixture fails the test otherwise)


def test_make_passes_trials_and_only(reaper):
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    result = reaper.run(["make", "-s", "--no-print-directory", "cmd-matrix", "TRIALS=2",
                         "ONLY=python-lock-*", "MATRIX_RESULTS=/r", "MATRIX_DOCS=/d"],
                        cwd=REPO, timeout=SHORT_TIMEOUT, env={"PATH": "/usr/bin:/bin"})
    assert result.stdout.split() == ["-m", "lab", "matrix", "--trials", "2", "--only",
                                     "python-lock-*", "--results-dir", "/r", "--docs-dir", "/d"]


# -------------------------------------------------------------------------- the workflow

def test_workflow_is_valid_and_uses_only_real_actions(reaper):
    yaml = pytest.importorskip("yaml")
    flow = yaml.safe_load(WORKFLOW.read_text())
    # GIVEN the workflow: it validates against GitHub's schema (check-jsonschema's copy)
    tool = Path(sys.executable).with_name("check-jsonschema")
    if tool.exists():
        result = reaper.run([str(tool), "--builtin-schema", "vendor.github-workflows",
                             str(WORKFLOW)], timeout=SHORT_TIMEOUT * 2)
        assert result.returncode == 0, result.stdout + result.stderr
    # THEN it runs on the three runners, and uses only these actions, pinned to a major
    run, merge = flow["jobs"]["run"], flow["jobs"]["merge"]
    assert run["strategy"]["matrix"]["os"] == ["ubuntu-latest", "ubuntu-24.04-arm", "macos-14"]
    used = {step["uses"] for job in flow["jobs"].values() for step in job["steps"]
            if "uses" in step}
    assert used == {"actions/checkout@v4", "actions/setup-python@v5",
                    "actions/upload-artifact@v4", "actions/download-artifact@v4"}
    # AND it calls exactly what the tests above ran: `lab matrix`, then `lab matrix merge`
    commands = [s.get("run", "") for s in run["steps"]]
    assert any(c.startswith("python -m lab matrix --trials") for c in commands)
    # AND each runner runs it under every interpreter the committed panels show, each on PATH
    assert run["env"]["PYTHONS"] == "3.10,3.11,3.12,3.13"
    assert any('--python "$PYTHONS"' in c for c in commands)
    [setup] = [s for s in run["steps"] if s.get("uses") == "actions/setup-python@v5"]
    assert setup["with"]["python-version"].split() == ["3.10", "3.12", "3.13", "3.11"]
    assert merge["needs"] == "run" and merge["if"] == "always()"
    assert "python -m lab matrix merge results/*.json" in [s.get("run") for s in
                                                            merge["steps"]]


def test_a_cell_reads_as_expected_or_not_whatever_its_verdict():
    # A deadlock the catalog expects is the lab doing its job: it must not look like a failure
    from lab.matrix import plot

    doc = json.loads((REPO / "results" / "linux-x86_64-py3.11.json").read_text())
    rows = {(r["scenario"], r["launcher"]): r for r in doc["rows"]}
    held, fixed = rows[("python-lock-held", "fork")], rows[("python-lock-reinit", "fork")]
    assert held["observed"] == "deadlock" and held["rate"] == 1.0
    assert plot._cell_face(held)[0] == plot._cell_face(fixed)[0] == plot.AS_EXPECTED
    assert plot._cell_face(held)[1].startswith("deadl.")
    missed = {**held, "counts": {"deadlock": 4, "hang": 1}, "rate": 0.8}
    assert plot._cell_face(missed)[0] == plot.NOT_AS_EXPECTED
    # AND a platform without a measured cell is a line of the strip, not a panel
    merged = {"platforms": [{"id": "darwin-arm64-py3.11", "state": "not run here",
                             "rows": [{**held, "status": "predicted"}]}]}
    assert not plot.ran(merged["platforms"][0])
    assert plot.not_run_line(merged["platforms"][0]) == (
        "darwin-arm64-py3.11: not run here (1 predicted; docs/RESULTS.md)")
