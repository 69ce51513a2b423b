"""Every scenario x launcher that can run here, once, for real: observed == expected.

The optional-package scenarios (torch, tokenizers, Polars, Kuzu, ONNX Runtime) run in
tests/test_optional_scenarios.py, and the Celery lab in tests/test_celery.py, with checks of
their own.

One trial per cell keeps `make test` short; `make matrix` runs N trials per cell and reports
rates. A cell is never retried here: a miss is a failure to look at, not noise to hide.
"""

import sys

import pytest
from test_optional_scenarios import OPTIONAL

from lab import scenarios
from lab.options import RunOptions
from lab.progress import Progress
from lab.runner import run_scenario

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="the lab's watcher is Linux"),
              pytest.mark.slow]


def _cells():
    for name in scenarios.names():
        if name in OPTIONAL or name == "celery-chromadb":
            continue  # their own test modules run these, with their own checks
        scenario = scenarios.get(name)
        for launcher, expected in scenario.expected.items():
            yield pytest.param(name, launcher, expected,
                               id=f"scenario={name}, launcher={launcher}")


@pytest.mark.parametrize(("name", "launcher", "expected"), list(_cells()))
def test_cell_reproduces_its_expected_verdict(name, launcher, expected, tmp_path):
    scenario = scenarios.get(name)
    missing = scenario.missing(launcher)
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}, not installed here")
    # GIVEN one scenario under one launcher; WHEN the lab runs it once
    evidence = run_scenario(name, launcher, RunOptions(debugger="none", out_base=tmp_path,
                                                       echo_output=False),
                            Progress(enabled=False))
    # THEN the observed verdict is the declared one, and the culprit's detail says why
    details = [f"{p.pid}: {p.verdict} {p.detail}" for p in evidence.processes]
    assert evidence.verdict == expected, "\n".join(details)
    assert evidence.complete
    if expected == "deadlock":
        assert evidence.parent.threads_at_fork or name.startswith("chromadb-exit"), \
            "a fork deadlock needs a thread the child did not inherit"


def test_every_fixed_twin_names_a_broken_scenario_and_is_ok_somewhere():
    for name in scenarios.names():
        scenario = scenarios.get(name)
        if scenario.fixed_of:
            assert scenario.fixed_of in scenarios.SCENARIOS, name
            assert scenario.fix, f"{name} must say what the fix is"
            assert "ok" in scenario.expected.values(), name
