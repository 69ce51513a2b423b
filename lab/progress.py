"""Progress lines on stderr: one per stage, with seconds since the run started."""

from __future__ import annotations

import json
import re
import sys
import time

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(path) -> str:
    """A path as the terminal shows it: as it is, or, when it holds a newline or another
    control character, quoted with escapes as the evidence's JSON has it (one line always)."""
    text = str(path)
    return json.dumps(text) if _CONTROL.search(text) else text


class Progress:
    def __init__(self, enabled: bool = True, stream=None, started: float | None = None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.started = time.monotonic() if started is None else started
        self.stages: list[dict] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stage(self, name: str, message: str) -> None:
        seconds = round(self.elapsed(), 4)
        self.stages.append({"stage": name, "t_s": seconds, "message": message})
        if self.enabled:
            self.stream.write(f"lab: [{seconds:8.3f}s] {name:<9} {message}\n")
            self.stream.flush()
