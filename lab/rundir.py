"""A run's evidence directory: a unique run id, atomic writes of evidence.json and summary.md."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import evidence as ev
from lab.errors import OutputNotWritable
from lab.verdicts import Verdict


def new_run_id(label: str) -> str:
    """A run id no other run (even a concurrent one) can share: time, label, pid, random."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{os.getpid()}-{secrets.token_hex(3)}"


PRIVATE_DIR = 0o700  # a run holds output, transcripts and cores: everything a process knew


@dataclass
class RunDir:
    """A run's directory. A write that fails (a full disk) is remembered in ``failed``, not
    raised: the run goes on to its verdict, and the caller says what was not written."""

    run_id: str
    path: Path
    failed: str | None = None

    @classmethod
    def create(cls, base: Path, run_id: str | None, label: str) -> RunDir:
        """Make ``base/<run id>`` (mode 0700); raises OutputNotWritable with the real cause."""
        base = Path(base)
        if base.is_symlink() and not base.exists():
            raise OutputNotWritable(f"--out {base} is a dangling symbolic link")
        if base.exists() and not base.is_dir():
            raise OutputNotWritable(f"--out {base} is not a directory")
        run_id = run_id or new_run_id(label)
        path = base / run_id
        try:
            base.mkdir(parents=True, exist_ok=True)
            path.mkdir(mode=PRIVATE_DIR)
            os.chmod(path, PRIVATE_DIR)  # whatever the umask
            probe = path / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except FileExistsError as exc:
            raise OutputNotWritable(f"run directory already exists: {path}") from exc
        except OSError as exc:
            raise OutputNotWritable(f"cannot write evidence under {base}: {exc.strerror}") from exc
        return cls(run_id=run_id, path=path.resolve())

    @classmethod
    def existing(cls, path: Path) -> RunDir:
        """The directory of a run made earlier (by this lab or another)."""
        path = Path(path)
        return cls(run_id=path.name, path=path)

    def read_evidence(self) -> ev.Evidence | None:
        """The evidence.json written there, or None when it is missing or unreadable."""
        try:
            return ev.from_dict(json.loads((self.path / "evidence.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def mark_interrupted(self, why: Callable[[str], str]) -> bool:
        """End an incomplete run that its lab left: verdict ``interrupted``, ``why(after)`` the
        error (``after``: " after the verdict X" when one was reached, else ""), the summary
        written anew. False when there is nothing to mark (gone, unreadable, or complete)."""
        evidence = self.read_evidence()
        if evidence is None or evidence.complete:
            return False
        reached = evidence.verdict
        evidence.verdict = Verdict.INTERRUPTED.value
        evidence.error = why(f" after the verdict {reached}" if reached else "")
        evidence.complete = True
        self.write_evidence(evidence)
        self.write_summary(evidence)
        return not self.failed

    def subdir(self, name: str) -> Path:
        """``name`` inside the run directory (made, private), for a second capture's files."""
        path = self.path / name
        path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        return path

    def write_evidence(self, evidence: ev.Evidence) -> Path:
        target = self.path / "evidence.json"
        self._write(target, evidence.to_json())
        return target

    def write_summary(self, evidence: ev.Evidence) -> Path:
        """summary.md, in the words of the way the run looked (a run, or ``lab inspect``)."""
        from lab.render import summary_markdown
        from lab.render_inspect import summary as inspect_summary

        target = self.path / "summary.md"
        render = inspect_summary if evidence.mode == "inspect" else summary_markdown
        self._write(target, render(evidence))
        return target

    def _write(self, target: Path, text: str) -> None:
        try:
            ev.write_atomic(target, text)
        except OSError as exc:
            self.failed = self.failed or f"{target.name}: {exc.strerror or exc}"
