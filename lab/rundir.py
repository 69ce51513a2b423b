"""A run's evidence directory: a unique run id, atomic writes of evidence.json and summary.md."""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab import evidence as ev, redact
from lab.errors import OutputNotWritable


def new_run_id(label: str) -> str:
    """A run id no other run (even a concurrent one) can share: time, label, pid, random."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class RunDir:
    run_id: str
    path: Path

    @classmethod
    def create(cls, base: Path, run_id: str | None, label: str) -> RunDir:
        base = Path(base)
        run_id = run_id or new_run_id(label)
        path = base / run_id
        try:
            base.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            probe = path / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except FileExistsError as exc:
            raise OutputNotWritable(f"evidence directory already exists: {path}",
                                    "choose another --run-id") from exc
        except OSError as exc:
            raise OutputNotWritable(f"cannot write evidence under {base}: {exc.strerror}") from exc
        return cls(run_id=run_id, path=path.resolve())

    def write_evidence(self, evidence: ev.Evidence) -> Path:
        target = self.path / "evidence.json"
        ev.write_atomic(target, evidence.to_json())
        return target

    def write_summary(self, evidence: ev.Evidence) -> Path:
        from lab.render import summary_markdown

        target = self.path / "summary.md"
        ev.write_atomic(target, summary_markdown(evidence))
        return target


def tee_output(stream, path: Path, echo: bool) -> None:
    """Copy a process's output, line by line and redacted, to ``path`` (flushed per line, so
    an interrupted run keeps it) and, with ``echo``, to stderr as ``  | line``. Returns at EOF."""
    with open(path, "w", encoding="utf-8") as log:
        for raw in iter(stream.readline, b""):
            line = redact.text(raw.decode(errors="replace"))
            log.write(line)
            log.flush()
            if echo:
                sys.stderr.write(f"  | {line}" if line.endswith("\n") else f"  | {line}\n")
                sys.stderr.flush()
