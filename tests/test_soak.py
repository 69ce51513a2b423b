"""The soak test's machinery on a few runs (`make soak` makes 200 and is not in `make test`)."""

import json
import sys

import pytest

from lab.soak import soak

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux /proc")


def test_a_short_soak_counts_runs_and_finds_no_leak(tmp_path):
    out = tmp_path / "evidence"
    out.mkdir()
    results = tmp_path / "soak.json"
    report = soak("python-lock-held", "fork", 3, out_base=out, results=results, quiet=True)
    assert report["verdicts"] == {"deadlock": 3}
    assert report["leaks"] == {}, report
    assert report["evidence_dirs"] == 4  # the warm-up run and the three
    assert json.loads(results.read_text())["runs"] == 3
