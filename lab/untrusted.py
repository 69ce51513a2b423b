"""Reading what the lab did not write: regular files only, a size cap, JSON with limits.

A transcript to parse, a crash report, an ``evidence.json`` to report on may be anything a user
(or an attacker) points the lab at: a FIFO nobody writes (a read blocks forever), ``/dev/zero``
(it never ends), a 2 GB sparse file, JSON nested 100 000 deep (``RecursionError``) or holding
``1e999999`` (``Infinity``, which is not JSON). Each is refused in one line (BadInput: exit 2)
or cut, with what was cut said; nothing here blocks, and memory stays bounded by the caps.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import BadInput

MAX_JSON_DEPTH = 256  # nesting of [ and {: far above any document the lab or macOS writes
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"))


@dataclass
class Read:
    data: bytes
    size: int  # the file's size: more than len(data) when it was cut at the cap

    @property
    def cut(self) -> bool:
        return self.size > len(self.data)


def read_regular(path: Path, limit: int, what: str = "a file") -> Read:
    """At most ``limit`` bytes of the regular file ``path``. Opened without blocking and
    checked with fstat before any read: raises BadInput (one line) for a missing or unreadable
    file, or one that is not a regular file (a FIFO, a device, a socket, a directory)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) |
                     getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BadInput(f"no such file: {path}") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        kind = next((name for test, name in _KINDS if test(info.st_mode)), None)
        if kind is not None or not stat.S_ISREG(info.st_mode):
            raise BadInput(f"{path} is {kind or 'not a regular file'}, not {what}: only a "
                           "regular file is read")
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return Read(data, max(info.st_size, len(data)))
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in ``text``, strings skipped (linear, no recursion);
    for a text with no more brackets than MAX_JSON_DEPTH, their count (a bound that suffices)."""
    opened = text.count("[") + text.count("{")
    if opened <= MAX_JSON_DEPTH:
        return opened  # cannot be deeper than the brackets it has: no scan needed
    depth = deepest = 0
    inside = escaped = False
    for char in text:
        if inside:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                inside = False
        elif char == '"':
            inside = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads(text: str, what: str, clamp: bool = False) -> Any:
    """``json.loads`` with limits: BadInput (one line) for nesting deeper than MAX_JSON_DEPTH,
    a non-finite number (``NaN``, ``Infinity``, ``1e999999``: with ``clamp``, read as None
    instead) or text that is not JSON (a ``ValueError`` with ``clamp``, for a caller that
    tries other readings)."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadInput(f"{what} nests deeper than {MAX_JSON_DEPTH} levels: not read")
    if clamp:
        return json.loads(text, parse_constant=lambda name: None,
                          parse_float=lambda number: _finite_or_none(number))
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except ValueError as exc:
        raise BadInput(f"{what} is not JSON the lab reads: {exc}") from None


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def finite(value: Any) -> Any:
    """``value`` with every non-finite float made None: what ``allow_nan=False`` can write."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value
