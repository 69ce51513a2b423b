"""Where ``lab matrix --python`` runs each interpreter: its own virtual environment, created once
from the pinned requirements below and cached under ``--env-dir``, keyed by interpreter version
and pins. Packages are installed when a cell first needs them; one that cannot be installed
makes the cells that need it "not run here" with pip's one line, cached with the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import interpreters
from lab.errors import LabError
from lab.evidence import write_atomic
from lab.interpreters import Interpreter

# Importable module -> the requirement that provides it: the versions the committed
# results/linux-x86_64-py3.11.json ran with (its platform.packages). Dependencies of these are
# whatever pip resolves for each interpreter; the results record what was installed.
PINS = {
    "chromadb": "chromadb==1.5.9",
    # The CPU build: PyPI has 2.13.0 only as a CUDA build of several GB; this local version is
    # on download.pytorch.org/whl/cpu (or a local wheel), else its cells say it was not found.
    "torch": "torch==2.13.0+cpu",
    "numpy": "numpy==2.4.6",
    "onnxruntime": "onnxruntime==1.32.0",
    "onnx": "onnx==1.23.2",
    "tokenizers": "tokenizers==0.23.3",
    "polars": "polars==2.1.0",
    "kuzu": "kuzu==0.11.3",
}
CREATE_TIMEOUT_S = 300.0  # python -m venv, ensurepip included
INSTALL_TIMEOUT_S = 1800.0  # a pip install of the whole set, downloads included
STATE = "lab-env.json"  # in the environment: what is installed, what could not be, timings


class EnvFailed(LabError):
    """An interpreter's environment could not be created: its panel is "not run here"."""

    exit_status = 9


@dataclass
class Runtime:
    """An interpreter the matrix runs cells in, and what it cannot run."""

    interpreter: Interpreter  # described with the catalog's modules (``missing``)
    python: str | None = None  # for run_trials; None: the lab's own interpreter
    failed: dict[str, str] = field(default_factory=dict)  # module -> why it was not installed
    env: dict | None = None  # the managed environment's state (STATE), when there is one
    why_not: str | None = None  # set when no cell can run in it (its environment failed)

    @property
    def own(self) -> bool:
        return self.python is None


def pins_key(pins: dict[str, str] = PINS) -> str:
    return hashlib.sha256(json.dumps(pins, sort_keys=True).encode()).hexdigest()[:10]


def env_path(env_dir: Path, interpreter: Interpreter, pins: dict[str, str] = PINS) -> Path:
    """e.g. ``.lab-envs/cpython-3.12.1-4be1c0a2d9``."""
    return (Path(env_dir) / f"{interpreter.implementation.lower()}-{interpreter.version}-"
            f"{pins_key(pins)}")


def _python(path: Path) -> Path:
    if os.name == "nt":
        return path / "Scripts" / "python.exe"  # a venv's layout on Windows
    return path / "bin" / "python"


def _one_line(text: str) -> str:
    """pip's reason in one line: "No matching distribution found for X", else its first
    ``ERROR:`` line (the last is often only a link to pip's docs), else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    chosen = next((e for e in errors if e.startswith("No matching distribution")), None)
    chosen = chosen or (errors or lines or ["no output"])[0]
    # "conflicting dependencies" alone hides what conflicted (e.g. a constraint file of pip's
    # own configuration that admits no release of the pin for this interpreter): name it
    if "conflicting dependencies" in chosen and "The conflict is caused by:" in lines:
        start = lines.index("The conflict is caused by:") + 1
        causes = [c for c in lines[start:] if c.startswith("The user requested")
                  or " depends on " in c]
        chosen = f"{chosen.rstrip('.')} ({'; '.join(causes)})"
    return chosen[:300]


def _create(path: Path, interpreter: Interpreter) -> float:
    """Create the venv at ``path`` (atomically: a half-made one is never found); its seconds."""
    started = time.monotonic()
    partial = path.with_name(f".{path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([interpreter.path, "-m", "venv", str(partial)],
                              capture_output=True, text=True, timeout=CREATE_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        why = "timed out" if done is None else _one_line(done.stderr + done.stdout)
        raise EnvFailed(f"cannot create a virtual environment with {interpreter.path}: {why}",
                        "install the interpreter's venv module (Debian: python3.X-venv)")
    shutil.rmtree(path, ignore_errors=True)  # one left without its state file: never finished
    partial.rename(path)
    return time.monotonic() - started


def _pip(path: Path, requirements: list[str]) -> str | None:
    """Install ``requirements`` into the venv; None when done, else pip's one line."""
    try:
        # not --quiet: it drops pip's "The conflict is caused by:" lines (_one_line)
        done = subprocess.run([str(_python(path)), "-m", "pip", "install",
                               "--disable-pip-version-check", "--no-input", *requirements],
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return f"pip install took over {INSTALL_TIMEOUT_S:.0f} s"
    return None if done.returncode == 0 else _one_line(done.stderr + done.stdout)


def _install(path: Path, state: dict, wanted: list[str], say) -> None:
    """Install the requirements of ``wanted`` not yet tried: together first, then one by one
    when that fails (to tell which one cannot be installed). Updates ``state``."""
    todo = [PINS[m] for m in wanted
            if PINS[m] not in state["installed"] and PINS[m] not in state["failed"]]
    if not todo:
        return
    say(f"installing {', '.join(todo)} into {path}")
    started = time.monotonic()
    if _pip(path, todo) is None:
        state["installed"] += todo
    else:
        for requirement in todo:
            why = _pip(path, [requirement])
            if why is None:
                state["installed"].append(requirement)
            else:
                state["failed"][requirement] = why
                say(f"cannot install {requirement}: {why}")
    state["install_s"] = round(state.get("install_s", 0.0) + time.monotonic() - started, 1)


def prepare(python: str, needed: list[str], env_dir: Path, say) -> Runtime:
    """The runtime for interpreter ``python``: the lab's own interpreter when it is the lab's
    Python version, ``python`` itself when it already is a virtual environment's, else its
    managed environment with the pins of the modules ``needed`` installed (a runtime whose
    ``why_not`` says why, when that environment cannot be created). Raises BadInput for an
    interpreter that is not one."""
    from lab import scenarios

    catalog = tuple(scenarios.modules())
    own = interpreters.describe(sys.executable, catalog)
    found = own if python == sys.executable else interpreters.describe(python)
    if found.minor == own.minor:
        # One results file per Python version: the lab's own environment runs its version.
        return Runtime(own)
    if found.in_venv:
        return Runtime(interpreters.describe(found.path, catalog), found.path)
    path = env_path(env_dir, found)
    try:
        return _managed(found, path, catalog, needed, say)
    except EnvFailed as exc:
        return Runtime(found, found.path, why_not=exc.line())


def _managed(found: Interpreter, path: Path, catalog: tuple[str, ...], needed: list[str],
             say) -> Runtime:
    state_file = path / STATE
    if state_file.is_file():
        state = json.loads(state_file.read_text())
    else:
        say(f"creating the environment of Python {found.version} in {path}")
        state = {"python": found.version, "interpreter": found.path, "pins": PINS,
                 "installed": [], "failed": {},
                 "create_s": round(_create(path, found), 1)}
    _install(path, state, [m for m in needed if m in PINS], say)
    write_atomic(state_file, json.dumps(state, indent=2) + "\n")
    failed = {m: f"could not install {PINS[m]} for Python {found.version}: "
                 f"{state['failed'][PINS[m]]}" for m in catalog if PINS.get(m) in
              state["failed"]}
    return Runtime(interpreters.describe(str(_python(path)), catalog), str(_python(path)),
                   failed, {"path": str(path), **state})
