"""One GDB/MI output line in, one record dict out, in time linear in the line's length."""

from __future__ import annotations

import re
from typing import Any

# The dicts are pygdbmi's (type, message, payload and, for result and async records, token):
# for a well-formed record, parse_record returns what pygdbmi.gdbmiparser.parse_response does.
# That function cannot read a saved transcript safely: its unescaping is quadratic in a string
# without escapes (~" and 10 KB of letters: 3 s), an unclosed list (^done,a=[) makes it loop
# forever, and a key without a value (^done,abc) raises TypeError. Here a damaged record gives
# what could be read of it, never an error.
_HEAD = re.compile(r"(?P<token>\d*)(?P<kind>[\^*=])")
_SPACE = re.compile(r"\s")
_STREAMS = {"~": "console", "&": "log", "@": "target"}
# GDB's escapes (printchar in gdb/utils.c): one character, or octal bytes in a row, which
# together may encode one UTF-8 character.
_ESCAPE = re.compile(r"\\(?:(?P<octal>[0-7]{3}(?:\\[0-7]{3})*)|(?P<char>.))")
_CHARS = {"'": "'", "\\": "\\", "a": "\a", "b": "\b", "e": "\033", "f": "\f", "n": "\n",
          "r": "\r", "t": "\t", '"': '"'}
# The body of a c-string up to its closing quote; the two branches never start alike, so a
# string that is never closed fails in one pass.
_STRING_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*')
_DICT_SKIP = re.compile(r"[ \t\r\n{,]*")
_VALUE_START = re.compile(r'[{\["]')
_LIST_NEXT = re.compile(r'[{\["\]]')
_GARBAGE_END = re.compile(r"[},]")


def parse_record(line: str) -> dict[str, Any]:
    """The record of one line of MI output; text that is no record is ``{"type": "output"}``."""
    head = _HEAD.match(line)
    if head:
        rest = line[head.end():]
        # pygdbmi's "\S+?(,.*)?$": the message runs to the first comma after its first character.
        end = rest.find(",", 1)
        message = rest if end < 0 else rest[:end]
        if message and not _SPACE.search(message):
            payload = None if end < 0 else _payload(line, line.index(",") + 1)
            token = int(head["token"]) if head["token"] else None
            kind = "result" if head["kind"] == "^" else "notify"
            return {"type": kind, "message": message, "payload": payload, "token": token}
    stream = _STREAMS.get(line[:1])
    close = line.rfind('"')
    if stream and line[1:2] == '"' and close >= 2:
        return {"type": stream, "message": None, "payload": unescape(line[2:close])}
    if is_prompt(line):
        return {"type": "done", "message": None, "payload": None}
    return {"type": "output", "message": None, "payload": line}


def is_prompt(line: str) -> bool:
    """Whether ``line`` is the ``(gdb)`` prompt that ends a response."""
    return line.startswith("(gdb)") and not line[5:].strip()


def unescape(text: str) -> str:
    """``text`` with GDB's c-string escapes decoded; an escape GDB never writes stays as is."""
    return _ESCAPE.sub(_unescape_one, text)


def _unescape_one(match: re.Match) -> str:
    octal = match["octal"]
    if octal is None:
        return _CHARS.get(match["char"], match[0])
    codes = [int(code, 8) for code in octal.split("\\")]
    try:
        return bytes(codes).decode("utf-8")
    except (ValueError, UnicodeDecodeError):  # over 0o377, or not UTF-8: keep the text
        return match[0]


def _string(text: str, pos: int) -> tuple[str, int]:
    """The c-string whose body starts at ``pos``, unescaped, and the position after its quote."""
    end = _STRING_BODY.match(text, pos).end()
    return unescape(text[pos:end]), end + 1


def _payload(text: str, pos: int) -> dict[str, Any]:
    """The ``key=value,...`` results from ``pos`` on, read as pygdbmi reads them: a repeated
    key collects its values in a list, keys inside a list are dropped, and what follows a
    value up to the next ``,`` or ``}`` is skipped. Iterative, so no depth of nesting recurses.
    """
    root: dict[str, Any] = {}
    stack: list[Any] = [root]
    keys: list[str | None] = [None]  # per open container: the key its new value goes to
    n = len(text)
    while stack and pos < n:
        top = stack[-1]
        value: Any = None
        if isinstance(top, dict):
            pos = _DICT_SKIP.match(text, pos).end()
            if pos >= n:
                break
            if text[pos] == "}":
                value, pos = stack.pop(), pos + 1
                keys.pop()
                if not stack:
                    break
            else:
                equals = text.find("=", pos)
                start = _VALUE_START.search(text, equals + 1) if equals >= 0 else None
                if start is None:
                    break  # a key without a value: the record ends here
                keys[-1] = text[pos:equals]
                pos = start.end()
                value, pos = _open(text, start[0], pos, stack, keys)
        else:
            found = _LIST_NEXT.search(text, pos)
            if found is None:
                break
            pos = found.end()
            if found[0] == "]":
                value = stack.pop()
                keys.pop()
            else:
                value, pos = _open(text, found[0], pos, stack, keys)
        if value is not None:
            pos = _store(text, pos, stack, keys, value)
    return root


def _open(text: str, char: str, pos: int, stack: list[Any], keys: list[str | None]):
    """Start the value ``char`` opens: a string is read whole, a tuple or list is pushed."""
    if char == '"':
        return _string(text, pos)
    stack.append({} if char == "{" else [])
    keys.append(None)
    return None, pos


def _store(text: str, pos: int, stack: list[Any], keys: list[str | None], value: Any) -> int:
    """Put a finished value into the open container; in a tuple, skip to the next , or }."""
    if not stack:
        return pos
    top = stack[-1]
    if isinstance(top, list):
        top.append(value)
        return pos
    key = keys[-1]
    if key in top:  # gdb repeats keys (sourceware bug 22217): keep every value
        if isinstance(top[key], list):
            top[key].append(value)
        else:
            top[key] = [top[key], value]
    else:
        top[key] = value
    end = _GARBAGE_END.search(text, pos)
    return end.start() if end else len(text)
