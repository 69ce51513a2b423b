"""Which lock a thread held at a fork: the ``with`` block or ``acquire()`` its stack was inside."""

# A stack says where a thread was, not what it held; the source says the rest. A frame whose
# line lies in the body of `with self._lock:` (a lock-like name), or after `x.acquire()` with
# no `x.release()` in between, in the same function, held that lock: unless that line waits on
# the same object (`self._cond.wait()`: Condition.wait releases the lock while it waits). The
# standard library's frames are left out: its locks are released in its waits (Event, Queue),
# or re-created in the child by CPython itself (logging, bpo-6721).

from __future__ import annotations

import ast
import functools
import os
import re
import stat
from typing import Any

from lab.evidence import PythonFrame

LOCKISH = re.compile(r"lock|mutex|mtx|cond|sem|guard|latch", re.IGNORECASE)
MAX_SOURCE_BYTES = 4 * 1024 * 1024
_STDLIB = re.compile(r"[/\\]lib[/\\]python\d+(\.\d+)?t?[/\\](?!.*(site|dist)-packages)")
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def is_stdlib(path: str) -> bool:
    """True for a file of the standard library (``.../lib/python3.11/threading.py``, frozen
    modules), False for the program's and its packages' (site-packages)."""
    return path.startswith("<frozen ") or bool(_STDLIB.search(path))


def held(frames: list[PythonFrame], cwd: str | None = None) -> dict[str, Any] | None:
    """The innermost lock the stack ``frames`` (most recent call first) held, as ``file``,
    ``line`` (of the ``with`` or ``acquire``), ``function``, ``statement``, ``lock``, ``how``
    and ``at`` (the frame's own line); None when none can be told."""
    for frame in frames:
        if frame.line is None or is_stdlib(frame.file):
            continue
        path = frame.file if os.path.isabs(frame.file) or not cwd else \
            os.path.join(cwd, frame.file)
        source = _source(path)
        if source is None:
            continue
        tree, lines = source
        site = _with_site(tree, frame.line) or _acquire_site(tree, frame.line)
        if site is None:
            continue
        lock, line, how = site
        current = lines[frame.line - 1] if frame.line <= len(lines) else ""
        if re.search(re.escape(lock) + r"\.wait(_for)?\(", current):
            continue  # Condition.wait(): the lock is released while it waits
        return {"file": frame.file, "line": line, "function": frame.function, "lock": lock,
                "statement": lines[line - 1].strip() if line <= len(lines) else "",
                "how": how, "at": frame.line}
    return None


def line_text(path: str, line: int | None) -> str | None:
    """The stripped text of ``line`` in ``path`` (a regular file), or None."""
    source = _source(path)
    if source is None or line is None or not 0 < line <= len(source[1]):
        return None
    return source[1][line - 1].strip()


@functools.lru_cache(maxsize=256)
def _source(path: str) -> tuple[ast.AST, list[str]] | None:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SOURCE_BYTES:
            return None  # never a FIFO or a device a report named: reading could block
        with open(path, "rb") as handle:
            data = handle.read(MAX_SOURCE_BYTES)
        return ast.parse(data), data.decode("utf-8", "replace").splitlines()
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # not Python source the lab can read: no lock is told from it


def _scope_of(tree: ast.AST, line: int) -> tuple[ast.AST, list[ast.AST]]:
    """The innermost function (or the module) around ``line``, and the ``with`` statements
    inside that scope whose body holds ``line``, outermost first."""
    scope, withs = tree, []
    node = tree
    while True:
        child = next((c for c in ast.iter_child_nodes(node) if _spans(c, line)), None)
        if child is None:
            return scope, withs
        if isinstance(child, _SCOPES):
            scope, withs = child, []
        elif isinstance(child, (ast.With, ast.AsyncWith)) and child.body and \
                child.body[0].lineno <= line:
            withs.append(child)
        node = child


def _spans(node: ast.AST, line: int) -> bool:
    start, end = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
    return start is not None and end is not None and start <= line <= end


def _name(expr: ast.AST) -> str:
    while isinstance(expr, ast.Call):
        expr = expr.func
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return expr.id if isinstance(expr, ast.Name) else ""


def _with_site(tree: ast.AST, line: int) -> tuple[str, int, str] | None:
    _, withs = _scope_of(tree, line)
    for node in reversed(withs):
        for item in node.items:
            if LOCKISH.search(_name(item.context_expr)):
                return ast.unparse(item.context_expr), node.lineno, "with"
    return None


def _acquire_site(tree: ast.AST, line: int) -> tuple[str, int, str] | None:
    scope, _ = _scope_of(tree, line)
    calls: list[tuple[int, str, str]] = []  # (line, "acquire"/"release", the object)
    for node in ast.walk(scope):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("acquire", "release") and node.lineno <= line):
            calls.append((node.lineno, node.func.attr, ast.unparse(node.func.value)))
    held_now: dict[str, int] = {}
    for lineno, what, lock in sorted(calls):
        if what == "acquire" and lineno < line:
            held_now[lock] = lineno
        elif what == "release":
            held_now.pop(lock, None)
    if not held_now:
        return None
    lock, lineno = max(held_now.items(), key=lambda item: item[1])
    return lock, lineno, "acquire"
