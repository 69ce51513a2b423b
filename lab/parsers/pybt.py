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
# py-bt-full (python-gdb.py's print_summary): "#11 Frame 0x7f.., for file X, line 10, in f (...)"
_FOR_FILE = ", for file "
_LINE_AFTER_FULL_FILE = ", line "
_LINE_IN_FULL = re.compile(r", line (?P<line>\d+|\?|None), in (?P<function>[^\s(]+)")


def parse_py_bt(text: str) -> list[PythonFrame]:
    """Return the Python frames in ``py-bt`` output, most recent call first.

    Source lines, "Waiting for the GIL", "Garbage-collecting" and "Unable to locate python
    frame" are not frames and are skipped; a built-in call becomes a frame whose file is
    ``<built-in>`` and whose line is None.
    """
    return [frame for line in text.splitlines() if (frame := python_frame_of_line(line))]


def python_frame_of_line(line: str) -> PythonFrame | None:
    """The frame one line of ``py-bt`` names (``  File "x.py", line 3, in f`` or a built-in
    call), else None."""
    frame = _file_frame(line)
    if frame:
        return frame
    match = _BUILTIN.match(line)
    if match:
        return PythonFrame(file=BUILTIN_FILE, line=None, function=match["function"])
    return None


def py_bt_full_frame(text: str) -> PythonFrame | None:
    """The frame of one ``py-bt-full`` line after its ``#N ``: ``Frame 0x7f.., for file
    x.py, line 10, in f (a=1)`` or ``<built-in method acquire ...>``; None for any other."""
    if text.startswith("<built-in "):
        return python_frame_of_line(text)
    if not text.startswith("Frame 0x"):
        return None
    start = text.find(_FOR_FILE)
    if start < 0:
        return None
    # The first ", line N, in " after the file: the locals' repr that follows may hold more.
    at = text.find(_LINE_AFTER_FULL_FILE, start)
    while at >= 0:
        match = _LINE_IN_FULL.match(text, at)
        if match:
            number = match["line"]
            return PythonFrame(file=text[start + len(_FOR_FILE):at],
                               line=int(number) if number.isdigit() else None,
                               function=match["function"])
        at = text.find(_LINE_AFTER_FULL_FILE, at + 1)
    return None


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
