"""Escape values the watched program supplied (argv, thread names, frames, messages) for Markdown.

Everything the lab writes into summary.md and report.md that it did not type itself passes through
one of these: ``text`` (a run of inline text: a list item, a heading, a table cell), ``code`` (a
code span) or ``fence`` (a fenced code block). Each keeps the value on the line the caller put it
on: a value is never the start of a line, so block syntax (``#``, ``-``, ``>``, ``1.``) cannot
take effect once its newlines are folded. The rules are CommonMark 0.31's (backslash escapes §2.4,
code spans §6.1, fenced code blocks §4.5) and GFM's tables (§4.10: a ``|`` splits a cell even
inside a code span unless it is escaped).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

NEWLINE_MARK = "\u21b5"  # "↵": shows where a line break was, on one line
# What CommonMark ends a line at (\n, \r, \r\n), plus what Python's str.splitlines() and a
# terminal also break at, so that no reader sees a second line.
_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
# The other C0/C1 controls (tab stays): an ESC sequence in a thread name must not reach a
# terminal that cats summary.md.
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")
# Inline metacharacters that act anywhere in a line: escapes, code, emphasis, links and images
# ([ ]), raw HTML, entities and autolinks (< > &), table cells (|), strikethrough (~), heading
# closers (#) and GitHub's math ($). "_" only where it could open or close emphasis: between
# two letters or digits it cannot (CommonMark §6.2, left/right-flanking runs), so
# FUTEX_WAIT_PRIVATE stays readable in the raw file.
_INLINE = re.compile(r"[\\`*\[\]<>&|~#$]|(?<![^\W_])_|_(?![^\W_])")


def fold(value: object) -> str:
    """``value`` as one line: line breaks become ``↵``, other control characters U+FFFD."""
    return _CONTROLS.sub("\ufffd", _BREAKS.sub(NEWLINE_MARK, str(value)))


def text(value: object) -> str:
    """``value`` as inline Markdown text that renders as itself: one line, no markup, no HTML.

    Safe in paragraphs, list items, headings and table cells (``|`` is escaped), after a prefix
    the caller writes.
    """
    return _INLINE.sub(lambda match: "\\" + match.group(), fold(value))


def code(value: object, *, cell: bool = False) -> str:
    """``value`` as a code span, delimited by more backticks than any run inside it.

    With ``cell``, for a GFM table cell: ``|`` becomes ``\\|``, which the table parser turns
    back into ``|`` before the span is read. A ``\\`` right before a ``|`` cannot be written in
    a span there (renderers disagree on ``\\\\|``), so such a value is rendered as ``text``.
    """
    body = fold(value)
    if cell:
        if "\\|" in body:
            return text(body)
        body = body.replace("|", "\\|")
    if not body:
        return "` `"
    ticks = "`" * (1 + max((len(run) for run in re.findall("`+", body)), default=0))
    # One space each side is stripped from a span that has it on both sides (§6.1), so pad a
    # body that starts or ends with a backtick, or has its own spaces on both ends.
    if body[0] == "`" or body[-1] == "`" or (body[0] == body[-1] == " " and body.strip()):
        body = f" {body} "
    return f"{ticks}{body}{ticks}"


def fence(lines: Iterable[str], info: str = "") -> Iterator[str]:
    """The lines of a fenced code block holding ``lines`` verbatim (line breaks inside a line
    are kept: a shell command may need them); its fence is longer than any backtick run in
    them, so no line can close it (§4.5). ``info`` is the lab's own word (``sh``)."""
    body = [_CONTROLS.sub("\ufffd", line) for line in lines]
    longest = max((len(run) for line in body for run in re.findall("`+", line)), default=0)
    ticks = "`" * max(3, longest + 1)
    yield ticks + info
    yield from body
    yield ticks
