"""`lab bench --quick` for real: valid JSON, Markdown and PNG with every section; nothing left.

No timing is asserted (the machine is shared); what is asserted is what the bench observed:
every lab run proved a deadlock, the watchdog's child was still alive at its timeout, every
debugger left the child deadlocked, the fixed start methods answered their queries.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LONG_TIMEOUT, REPO, SHORT_TIMEOUT
from lab.bench import evidence_cost, report
from lab.bench.context import BenchFailed
from lab.bench.stats import summary
from lab.envinfo import platform_key
from lab.linux import procfs

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the bench runs on Linux only")

QUICK_TIMEOUT = LONG_TIMEOUT  # only catches a hang; the quick bench takes about 40 s here
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def check_document(results: dict, quick: bool) -> None:
    assert results["schema"] == "lab-bench/1"
    assert results["quick"] is quick
    verdict = results["time_to_verdict"]
    assert set(verdict["scenarios"]) == {"chromadb-tokio", "python-lock-held"}
    for name, cell in verdict["scenarios"].items():
        assert "error" not in cell, (name, cell)
        runs = verdict["runs"]
        # Every lab run proved the deadlock and every floor run saw the child block.
        assert cell["lab"]["verdicts"] == {"deadlock": runs}, name
        assert cell["lab"]["fork_to_verdict_s"]["n"] == runs
        assert cell["floor"]["fork_to_blocked_s"]["n"] == runs
        assert cell["floor"]["child_cpu_s"]["n"] == runs
        # The watchdog ran for real, and its child was still hung when the join timed out.
        assert cell["watchdog"]["alive_at_timeout"] == verdict["watchdog"]["runs"]
        lab, floor = cell["lab"]["fork_to_verdict_s"], cell["floor"]["fork_to_blocked_s"]
        assert cell["ratios"]["lab_to_floor"] == round(lab["median"] / floor["median"], 1)
    evidence = results["evidence_cost"]
    assert "error" not in evidence, evidence  # the tools measured, and how the child ended
    assert evidence["still_deadlocked"] is True
    tools = {tool["tool"].split(" (")[0]: tool for tool in evidence["tools"]}
    assert {"gdb", "gdb batch", "lldb batch", "strace snapshot", "gcore"} <= set(tools)
    for tool in evidence["tools"]:
        if not tool.get("skipped"):
            assert "error" not in tool, tool
            assert tool["seconds"] > 0 and tool["bytes"] > 0, tool
    assert tools["gdb"]["python_frames"] > 0  # py-bt reached the blocked query
    assert "FUTEX_WAIT" in tools["strace snapshot"]["first_line"]
    fixes = results["fix_cost"]["start"]
    assert list(fixes) == ["fork", "forkserver", "spawn", "lazy"]
    assert not fixes["fork"]["answers_queries"]
    for method in ("forkserver", "spawn", "lazy"):
        assert fixes[method]["exit_codes"] == [0] * fixes[method]["children"], method
        assert fixes[method]["ready_s"]["n"] >= 1
    per_query = results["fix_cost"]["per_query"]
    assert per_query["fresh_process_s"]["n"] >= 1 and per_query["warm_query_s"]["n"] >= 1
    scaling = results["scaling"]
    for row in scaling["children"] + scaling["threads"]:
        assert set(row["verdicts"]) == {"deadlock"}, row
        # children blocked on a pipe only their waiting parent could write: a hang before the
        # lab proved wait-for cycles (the committed results), a deadlock across processes since
        assert row["steady_verdict"] == ("deadlock" if "fork_guard" in results else "hang"), row
        assert row["processes_followed"] >= row["children"] + 1
    assert [row["children"] for row in scaling["children"]][:2] == [1, 8]
    assert set(scaling["watch_overhead"]["commands"]) == {"true", "python -c pass"}
    stacks = results["python_stacks"]  # py-spy vs py-bt on a held child, then lab inspect
    assert "error" not in stacks, stacks
    assert stacks["still_deadlocked"] is True
    for tool in stacks["tools"]:
        if tool["tool"].startswith("py-spy"):
            assert "error" not in tool and tool["python_frames"] > 0, tool
        else:  # gdb's py-bt: read, or skipped where the interpreter has no gdb extension
            assert tool.get("skipped") or tool["python_frames"] > 0, tool
    assert stacks["inspect"]["none"]["verdict"] == "deadlock"
    assert stacks["inspect"]["none"]["pause_s"]["n"] == 0  # no debugger: never paused
    assert stacks["inspect"]["gdb"]["pause_s"]["n"] == stacks["rounds"]
    guard = results.get("fork_guard")  # added later than the committed full results
    if guard is not None or quick:
        assert guard and "error" not in guard, guard
        assert [row["threads"] for row in guard["rows"]] == [1, 10, 100]
        assert all(row["median_ms"] > 0 for row in guard["rows"])
        assert guard["off_is_os_fork"] is True  # off, os.fork is the interpreter's own


def check_markdown(text: str, image: str) -> None:
    for heading in report.SECTIONS:
        assert f"\n{heading}\n" in text, heading
    assert f"]({image})" in text
    assert "| chromadb-tokio" in text and "| python-lock-held" in text


@pytest.mark.slow
def test_quick_bench_writes_valid_results(reaper, tmp_path):
    # GIVEN an empty output directory
    # WHEN the quick bench runs for real
    result = reaper.lab("bench", "--quick", "--results", str(tmp_path), "--docs",
                        str(tmp_path), timeout=QUICK_TIMEOUT)
    # THEN it exits 0 and names its three files on stdout, progress on stderr
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    paths = [Path(line) for line in result.stdout.split()]
    key = platform_key()
    assert [p.name for p in paths] == [f"bench-{key}-quick.json", "BENCH-quick.md",
                                       "bench-quick.png"]
    assert "lab: [" in result.stderr and "time to verdict" in result.stderr
    # AND the JSON has every section, with what the bench observed
    results = json.loads(paths[0].read_text())
    check_document(results, quick=True)
    assert results["platform"]["key"] == key
    # AND the Markdown has every section and shows the plot, which is a real PNG
    check_markdown(paths[1].read_text(), "bench-quick.png")
    width, height = png_size(paths[2])
    assert width > 400 and height > 300
    # AND no temporary file is left next to them, nor the bench's scratch directory
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    scratch = result.stderr.split("scratch ", 1)[1].split()[0]
    assert not Path(scratch).exists()


def test_committed_full_results_are_valid():
    # GIVEN the committed docs/BENCH.md, its plot and the full runs' results
    committed = [p for p in (REPO / "results").glob("bench-*.json")
                 if not p.name.endswith("-quick.json")]
    if not committed:
        pytest.skip("no full bench results committed yet")
    # THEN each is a full run with every section, and the Markdown shows a real PNG
    for path in committed:
        check_document(json.loads(path.read_text()), quick=False)
    check_markdown((REPO / "docs" / "BENCH.md").read_text(), "bench.png")
    png_size(REPO / "docs" / "bench.png")


def test_unwritable_output_is_one_line_and_exit_2(reaper):
    # GIVEN a results directory that cannot be created
    # WHEN the bench starts, THEN it refuses at once: one line, exit 2, nothing measured
    result = reaper.lab("bench", "--quick", "--results", "/proc/lab-bench-nowhere",
                        timeout=SHORT_TIMEOUT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "/proc/lab-bench-nowhere" in result.stderr


@pytest.mark.slow
def test_sigint_during_the_bench_reaps_everything(reaper, tmp_path):
    # GIVEN a quick bench that holds a deadlocked child for the debuggers
    bench = reaper.popen([sys.executable, "-m", "lab", "bench", "--quick", "--results",
                          str(tmp_path), "--docs", str(tmp_path)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = wait_for_line(bench, b"cost of evidence: gdb")
    # WHEN the bench gets SIGINT while gdb works on that child
    bench.send_signal(signal.SIGINT)
    _, err = bench.communicate(timeout=LONG_TIMEOUT)
    # THEN it exits 130 with one error line, writes no results, and (the autouse fixture
    # checks it) leaves no process behind: no held child, no probe, no debugger
    assert bench.returncode == 130, (seen + err).decode(errors="replace")[-2000:]
    assert b"Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(b"lab: error: interrupted")
    assert not list(tmp_path.iterdir())
    scratch = seen.split(b"scratch ", 1)[1].split()[0].decode()
    assert not Path(scratch).exists()


def wait_for_line(proc: subprocess.Popen, needle: bytes, limit: float = LONG_TIMEOUT) -> bytes:
    """Read ``proc``'s stderr until a line contains ``needle`` (a handshake with a deadline)."""
    seen = b""
    deadline = time.monotonic() + limit
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            pytest.fail(f"no line with {needle!r}: {seen.decode(errors='replace')[-2000:]}")
        ready, _, _ = select.select([proc.stderr], [], [], left)
        if ready:
            chunk = proc.stderr.read1(65536)
            if not chunk:
                pytest.fail(f"stderr closed: {seen.decode(errors='replace')[-2000:]}")
            seen += chunk
    return seen


def test_a_held_child_that_ended_is_named_at_once_with_its_signal():
    # GIVEN a child that was killed and is not reaped yet (a zombie)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.kill()
        deadline = time.monotonic() + SHORT_TIMEOUT
        while procfs.stat(child.pid).state != "Z":
            assert time.monotonic() < deadline, "the killed child never became a zombie"
            time.sleep(0.005)
        # WHEN the evidence bench waits for it to sleep untraced again
        started = time.monotonic()
        with pytest.raises(BenchFailed) as failed:
            evidence_cost._wait_untraced(child.pid)
        # THEN it says how the child ended, without waiting out its deadline
        assert time.monotonic() - started < evidence_cost.UNTRACED_TIMEOUT_S
        assert "killed by SIGKILL" in str(failed.value), failed.value
        assert f"its parent: PID {os.getpid()}" in str(failed.value)
    finally:
        child.kill()
        child.wait(timeout=SHORT_TIMEOUT)


def test_summary_of_measurements():
    # GIVEN values with a missing one, WHEN summarised, THEN None is left out
    assert summary([0.3, None, 0.1, 0.2]) == {"n": 3, "min": 0.1, "median": 0.2, "max": 0.3,
                                              "values": [0.3, 0.1, 0.2]}
    assert summary([None])["median"] is None


def test_a_family_that_failed_is_reported_not_hidden(tmp_path):
    # GIVEN results where every measurement family failed outright
    failed = {"error": "scenario 'chromadb-tokio' needs chromadb, not installed here"}
    results = {"command": "python -m lab bench", "quick": False, "finished": "now",
               "seconds": 1.0, "machine": {"cpus": 2, "kernel": "k"},
               "platform": {"key": "linux-x86_64-py3.11", "libc": "glibc", "packages": {}},
               "time_to_verdict": failed, "evidence_cost": failed, "fix_cost": failed,
               "scaling": failed, "notes": []}
    # WHEN it is rendered, THEN each section says why it has no numbers, and the plot is drawn
    text = report.markdown(results, "bench.png")
    check_markdown_sections = [h for h in report.SECTIONS if f"\n{h}\n" in text]
    assert check_markdown_sections == list(report.SECTIONS)
    assert text.count(failed["error"]) == 4
    report.plot(results, tmp_path / "bench.png")
    png_size(tmp_path / "bench.png")


def test_the_bench_picture_hides_no_series_and_gives_each_axis_one_meaning():
    import matplotlib.pyplot as plt

    from lab.bench import report

    results = json.loads((REPO / "results" / "bench-linux-x86_64-py3.11.json").read_text())
    fig = report.figure(results)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        drawn = [ax for ax in fig.axes if ax.axison]
        for ax in drawn:
            legend = ax.get_legend()
            if legend is None:
                continue
            box = legend.get_window_extent(renderer)
            for other in drawn:  # a legend over a plotting area could hide a series
                assert not box.overlaps(other.get_window_extent(renderer)), ax.get_title()
        for ax in drawn:
            assert " or " not in ax.get_xlabel(), ax.get_xlabel()  # one meaning per axis
    finally:
        plt.close(fig)
