"""Orphaned-lock forensics and CPython's fork warning, on real deadlocked children."""

import glob
import json
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/mem")


def _run(reaper, tmp_path, scenario, *extra):
    result = reaper.lab("run", scenario, "--debugger", "none", "--json", "--quiet",
                        "--out", str(tmp_path), *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _pyenv_python(version: str) -> str | None:
    found = sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python{version}"))
    return found[-1] if found else None


def test_native_mutex_owner_is_named_as_a_parent_thread_the_child_lacks(reaper, tmp_path):
    # GIVEN a pthread mutex locked by a native thread when the parent forked
    evidence = _run(reaper, tmp_path, "native-mutex-held")
    # WHEN the lab reads the futex word the deadlocked child waits on
    (finding,) = [f for f in evidence["forensics"] if f["lock"] == "glibc pthread_mutex_t"]
    child = next(p for p in evidence["processes"] if p["verdict"] == "deadlock")
    parent_tids = {t["tid"]: t for t in evidence["parent"]["threads_at_fork"]}
    # THEN its owner is the parent's native holder thread, absent from the child
    assert finding["orphaned"] is True and finding["owner_in_child"] is False
    assert finding["owner_tid"] in parent_tids
    assert finding["owner_tid"] not in {t["tid"] for t in child["threads"]}
    assert "native thread" in finding["owner_name"]
    assert finding["mutex_kind"] == "PTHREAD_MUTEX_NORMAL"
    summary = (tmp_path / evidence["run_id"] / "summary.md").read_text()
    assert "Whose lock is it" in summary and str(finding["owner_tid"]) in summary


def test_a_python_lock_is_reported_as_keeping_no_owner(reaper, tmp_path):
    # GIVEN a threading.Lock (a semaphore in CPython, no owner field) held at fork
    evidence = _run(reaper, tmp_path, "python-lock-held")
    # THEN the word is read, and the lab says it is not a glibc mutex instead of guessing
    assert evidence["verdict"] == "deadlock"
    assert [f["lock"] for f in evidence["forensics"]] == ["not a glibc mutex"]
    assert "orphaned" not in evidence["forensics"][0]


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_cpython_fork_warning_is_recorded_with_its_limits(reaper, tmp_path, version):
    python = _pyenv_python(version)
    if python is None:
        pytest.skip(f"no CPython {version} under /root/.pyenv/versions")
    # GIVEN the native-thread scenario run by CPython >= 3.12
    evidence = _run(reaper, tmp_path, "native-mutex-held", "--python", python)
    # THEN its "multi-threaded ... fork()" DeprecationWarning is in the evidence, with a note
    assert evidence["platform"]["python"].startswith(version)
    (warning,) = evidence["warnings"]
    assert warning["category"] == "DeprecationWarning"
    assert "is multi-threaded, use of fork() may lead to deadlocks" in warning["message"]
    assert "only the threads alive at the moment of fork()" in warning["note"]
    assert evidence["verdict"] == "deadlock"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ warns")
def test_no_fork_warning_before_3_12(reaper, tmp_path):
    evidence = _run(reaper, tmp_path, "python-lock-held")
    assert evidence["warnings"] == []


def test_an_interpreter_that_does_not_exist_is_one_line(reaper, tmp_path):
    result = reaper.lab("run", "python-lock-held", "--python", "/nonexistent/python9",
                        "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no such interpreter" in result.stderr
