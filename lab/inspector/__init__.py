"""``lab inspect PID``: diagnose a process that is already hung, without relaunching it."""

from lab.inspector.run import InspectOptions, inspect

__all__ = ["InspectOptions", "inspect"]
