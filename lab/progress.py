"""Progress lines on stderr: one per stage, with seconds since the run started."""

from __future__ import annotations

import sys
import time


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
