"""Parse the text of gdb's ``py-bt`` (CPython's python-gdb.py) into PythonFrames."""

from __future__ import annotations

import re

from lab.evidence import PythonFrame

# python-gdb.py writes '  File "%s", line %s, in %s' ("?" when the line is unknown) and the
# source line under it indented by four spaces, which the two-space limit keeps out.
_FILE_LINE = re.compile(
    r'^ {0,2}File "(?P<file>.*)", line (?P<line>\d+|\?|None), in (?P<function>.+?)\s*$'
)
# A C function called from Python: '  <built-in method acquire of _thread.lock object at ...>'.
_BUILTIN = re.compile(r"^ {0,2}<built-in (?:method|function) (?P<function>[^\s>]+)")

BUILTIN_FILE = "<built-in>"


def parse_py_bt(text: str) -> list[PythonFrame]:
    """Return the Python frames in ``py-bt`` output, most recent call first.

    Source lines, "Waiting for the GIL", "Garbage-collecting" and "Unable to locate python
    frame" are not frames and are skipped; a built-in call becomes a frame whose file is
    ``<built-in>`` and whose line is None.
    """
    frames: list[PythonFrame] = []
    for line in text.splitlines():
        match = _FILE_LINE.match(line)
        if match:
            number = match["line"]
            frames.append(
                PythonFrame(
                    file=match["file"],
                    line=int(number) if number.isdigit() else None,
                    function=match["function"],
                )
            )
            continue
        match = _BUILTIN.match(line)
        if match:
            frames.append(PythonFrame(file=BUILTIN_FILE, line=None, function=match["function"]))
    return frames
