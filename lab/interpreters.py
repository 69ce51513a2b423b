"""Another Python interpreter to run a scenario in: found, versioned, its packages checked."""

from __future__ import annotations

import json
import shutil
import subprocess

from lab.errors import BadInput

PROBE_TIMEOUT_S = 20.0  # starting an interpreter and importing importlib.util; generous
_PROBE = (
    "import importlib.util, json, platform, sys\n"
    "print(json.dumps({'version': platform.python_version(),"
    " 'missing': [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]}))\n"
)


def probe(python: str, modules: tuple[str, ...]) -> tuple[str, str, list[str]]:
    """Return (absolute path, version, modules it cannot import) of interpreter ``python``.

    Raises BadInput when it is not found or does not run as a Python interpreter.
    """
    path = shutil.which(python)
    if path is None:
        raise BadInput(f"--python {python!r}: no such interpreter",
                       "give a path or a command on PATH, e.g. python3.12")
    said = ""
    try:
        done = subprocess.run([path, "-c", _PROBE, *modules], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, check=False)
        said = (done.stderr.strip().splitlines() or [""])[0]
        answer = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        raise BadInput(f"--python {python!r} does not run as a Python interpreter"
                       + (f" ({said})" if said else "")) from None
    return path, answer["version"], answer["missing"]
