"""Name → object tables whose entries are imported on first use (scenarios, launchers, drivers)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from lab.errors import BadInput


def load(table: Mapping[str, str], name: str, kind: str, remedy: str | None = None,
         attribute: str | None = None) -> Any:
    """The object ``table[name]`` names: ``"module:ATTRIBUTE"``, or ``"module"`` (the module
    itself, or its ``attribute`` when one is given).

    Importing lazily keeps each entry's dependencies (ChromaDB, pygdbmi, ...) out of the
    others' way. Raises BadInput for an unknown name, listing the known ones.
    """
    try:
        module, _, named = table[name].partition(":")
    except KeyError:
        raise BadInput(f"unknown {kind} {name!r}; choose one of: {', '.join(table)}",
                       remedy) from None
    loaded = importlib.import_module(module)
    named = named or attribute
    return getattr(loaded, named) if named else loaded
