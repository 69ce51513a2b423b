"""Parse the text of gdb's ``py-bt`` (CPython's python-gdb.py) into PythonFrames."""

from __future__ import annotations

import re

from lab.evidence import PythonFrame

# python-gdb.py writes '  File "%s", line %s, in %s' ("?" when the line is unknown) and the
# source line under it indented by four spaces, which the two-space limit keeps out. The
# file may itself hold '", line ': the last one that a line number and a function follow
# ends it. (One regex, ".*" then ".+?\s*$", took time cubic in the length of such a line.)
_FILE_START = re.compile(r" {0,2}File \"")
_LINE_AFTER_FILE = '", line '
_LINE_IN = re.compile(r'", line (?P<line>\d+|\?|None), in ')
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
        frame = _file_frame(line)
        if frame:
            frames.append(frame)
            continue
        match = _BUILTIN.match(line)
        if match:
            frames.append(PythonFrame(file=BUILTIN_FILE, line=None, function=match["function"]))
    return frames


def _file_frame(line: str) -> PythonFrame | None:
    start = _FILE_START.match(line)
    if not start:
        return None
    at = line.rfind(_LINE_AFTER_FILE, start.end())
    while at >= 0:
        match = _LINE_IN.match(line, at)
        if match and match.end() < len(line):
            number = match["line"]
            # The function without trailing blanks, but never empty.
            function = line[match.end():].rstrip() or line[match.end()]
            return PythonFrame(file=line[start.end():at],
                               line=int(number) if number.isdigit() else None,
                               function=function)
        at = line.rfind(_LINE_AFTER_FILE, start.end(), at)
    return None
