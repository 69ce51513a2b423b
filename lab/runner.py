"""``lab run``: one scenario under one launcher, watched, judged against its expected verdict."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from lab import interpreters, launchers, scenarios
from lab.errors import BadInput
from lab.evidence import Evidence
from lab.progress import Progress
from lab.rundir import new_run_id
from lab.watch.engine import Watch, WatchOptions


def run_scenario(name: str, launcher: str = "fork", *, debugger: str = "auto",
                 timeout: float | None = None, out_base: Path = Path("crash_dumps"),
                 progress: Progress | None = None, strace: bool = False,
                 python: str | None = None, debugger_timeout: float | None = None,
                 gcore_limit_mb: float | None = None) -> Evidence:
    """Run scenario ``name`` once; return its evidence. Raises LabError for bad input.

    ``python``: another interpreter to run the scenario in (e.g. a CPython 3.12 to see its
    fork DeprecationWarning); it must be able to import the scenario's packages.
    """
    scenario = scenarios.get(name)
    launchers.get(launcher)
    if launcher not in scenario.expected:
        raise BadInput(f"scenario {name!r} does not run under launcher {launcher!r}; "
                       f"it runs under: {', '.join(scenario.expected)}")
    interpreter, version = sys.executable, None
    if python is not None:
        interpreter, version, absent = interpreters.probe(python, scenario.requires)
        missing = absent
    else:
        missing = scenario.missing()
    if missing:
        raise scenarios.MissingPackage(
            f"scenario {name!r} needs {', '.join(missing)}, not installed here",
            f"pip install {' '.join(missing)}")
    run_id = new_run_id(f"{name}-{launcher}")
    scratch = tempfile.mkdtemp(prefix=f"lab-{run_id}-")
    env = {**os.environ, **scenario.env, "LAB_SCRATCH_DIR": scratch}
    options = WatchOptions(
        argv=[interpreter, "-m", "lab.scenarios.host", name, "--launcher", launcher],
        timeout=timeout or scenario.default_timeout,
        debugger=debugger,
        out_base=out_base,
        run_id=run_id,
        scenario=name,
        launcher=launcher,
        expected=scenario.expected[launcher],
        side_channel=True,
        env=env,
        cwd=str(Path(__file__).resolve().parents[1]),
        strace=strace,
        target_python=version,
        debugger_timeout=debugger_timeout,
        gcore_limit_mb=gcore_limit_mb,
        echo_output=progress is None or progress.enabled,
    )
    try:
        return Watch(options, progress).run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
