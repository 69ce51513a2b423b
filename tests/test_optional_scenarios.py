"""Optional-package scenarios (torch/OpenMP, tokenizers, Polars, Kuzu, ONNX Runtime), for real.

Every scenario x launcher runs once through ``python -m lab run --json`` and must reproduce
its declared verdict, with the evidence that makes that verdict true: a proven futex wait for a
deadlock, a spinning child for the OpenMP livelock, the Kuzu lock error for the spawned rows.
A cell whose package is not installed is skipped with the reason.
"""

import json
import sys
from pathlib import Path

import pytest

from conftest import LONG_TIMEOUT
from lab import scenarios

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="the lab's watcher is Linux"),
              pytest.mark.slow]

OPTIONAL = ("openmp-threads", "openmp-threads-spin", "openmp-single-thread", "tokenizers",
            "tokenizers-parallelism-unset", "polars", "kuzu", "kuzu-close-before-launch",
            "onnxruntime")
FORKED = ("fork", "mp-fork", "pool-fork")  # the child is a copy of the parent's memory


def _cells():
    for name in OPTIONAL:
        for launcher, expected in scenarios.get(name).expected.items():
            yield pytest.param(name, launcher, expected,
                               id=f"scenario={name}, launcher={launcher}")


def _run(reaper, tmp_path, name, launcher):
    """Run one trial through the CLI; return (exit status, evidence, what the processes said)."""
    missing = scenarios.get(name).missing()
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}, not installed here "
                    "(pip install -e '.[torch,optional]')")
    result = reaper.lab("run", name, "--launcher", launcher, "--json", "--debugger", "none",
                        "--out", str(tmp_path), timeout=LONG_TIMEOUT)
    assert result.stdout, result.stderr
    evidence = json.loads(result.stdout)
    output = (Path(evidence["evidence_dir"]) / "output.txt").read_text(errors="replace")
    return result.returncode, evidence, output


def _children(evidence):
    """The scenario host (the process the lab started) and the children it launched."""
    pids = {p["pid"] for p in evidence["processes"]}
    [host] = [p for p in evidence["processes"] if p["ppid"] not in pids]
    return host, [p for p in evidence["processes"] if p["ppid"] == host["pid"]]


def _openmp_single(evidence, output, launcher):
    # The fix is not "no threads": libgomp's workers existed at fork (forked rows), yet the
    # child's op ran on the calling thread alone.
    if launcher in FORKED:
        assert len(evidence["parent"]["threads_at_fork"]) >= 3, evidence["parent"]
    assert "parallel op on 1 thread(s)" in output and "parallel op = " in output, output


def _tokenizers_unset(evidence, output, launcher):
    # The parent did use its Rayon pool; the library's own fork handler saved the child.
    assert "TOKENIZERS_PARALLELISM=None" in output, output
    if launcher in FORKED:
        assert evidence["parent"]["threads_at_fork"], evidence["parent"]
    assert "encoded 2000 texts" in output.split("child", 1)[1], output


def _onnxruntime(evidence, output, launcher):
    if launcher in FORKED:  # the intra-op pool's workers were there, and did not matter
        assert len(evidence["parent"]["threads_at_fork"]) >= 3, evidence["parent"]
    assert "20 runs of the session finished" in output, output


EXTRA_CHECKS = {"openmp-single-thread": _openmp_single,
                "tokenizers-parallelism-unset": _tokenizers_unset,
                "onnxruntime": _onnxruntime}


@pytest.mark.parametrize(("name", "launcher", "expected"), list(_cells()))
def test_cell_reproduces_its_measured_verdict(reaper, tmp_path, name, launcher, expected):
    # GIVEN a scenario of an optional package under one launcher; WHEN the lab runs it once
    code, evidence, output = _run(reaper, tmp_path, name, launcher)
    details = "\n".join(f"{p['pid']} ({p['ppid']}): {p['verdict']} {p['detail']}"
                        for p in evidence["processes"])
    # THEN the verdict is the measured one and `lab run` says so with exit status 0
    assert evidence["verdict"] == expected, details
    assert code == 0 and evidence["complete"], details
    _host, children = _children(evidence)
    if expected == "deadlock":
        # a child, not the host, sleeps in a private futex wait with no timeout: proven early
        [dead] = [p for p in children if p["verdict"] == "deadlock"]
        assert dead["detail"].startswith("deadlock proven"), details
        assert all(t["syscall"]["name"] == "futex" and t["syscall"]["futex"]["timeout"] is None
                   for t in dead["threads"]), dead["threads"]
        assert evidence["detect_s"] < scenarios.get(name).default_timeout
        # and the parent had library threads the child did not get, named as in /proc comm
        prefixes = scenarios.get(name).expected_threads
        names = [t["name"] for t in evidence["parent"]["threads_at_fork"]]
        assert any(n.startswith(prefixes) for n in names), names
    elif expected == "hang":
        # a child spins: judged at --timeout, running, and its detail says livelock —
        # told apart from a blocked child (openmp-threads, the same hazard, is a deadlock)
        [spinning] = [p for p in children if p["verdict"] == "hang"]
        assert spinning["detail"].split("; ", 1)[1].startswith("livelock: spinning"), details
        assert any(t["state"] == "R" for t in spinning["threads"]), spinning["threads"]
        assert spinning["killed_by_lab"], spinning
    elif expected == "error":
        # the spawned child opened the path the parent still holds: Kuzu's file lock
        assert "Could not set lock on file" in output, output
    else:
        assert all(p["verdict"] == "ok" for p in evidence["processes"]), details
    if name in EXTRA_CHECKS:
        EXTRA_CHECKS[name](evidence, output, launcher)
