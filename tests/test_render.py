"""summary.md and report.md render what the watched program supplied as text, never as Markdown.

A Markdown parser (markdown-it-py, installed with chromadb's ``rich``) reads the documents the
way a viewer does; tables are also split the way cmark-gfm (GitHub) splits them, since the two
disagree on a backslash before a ``|``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import DATA, PROGRAMS, SHORT_TIMEOUT
from lab import markdown as md, render
from lab.evidence import from_dict
from lab.report import report_markdown

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py parses the documents")

HOSTILE_ARG = "x\n# heading\n![img](x)<script>alert(1)</script>"
COMM = "a|b`<i>*[x]#"  # the name tests/programs/markdown_in_names.py gives itself
RECORDED = DATA / "evidence-markdown-in-names-x86_64.json"
# Values a program may put in its argv, thread names, messages; id -> value.
VALUES = {
    "heading-image-html": HOSTILE_ARG,
    "pipe": "FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME",
    "backslash-pipe": "a\\|b\\\\|c",
    "emphasis": "*a* _b_ __init__ foo_bar_ ~~c~~ **d**",
    "link-autolink-entity": "[t](http://x) <http://y> &lt; &amp;",
    "backticks": "`a` ``b`` ```",
    "crlf-and-controls": "a\r\nb\rc\x1b[31md\x00e\u2028f",
    "leading-block-markers": "# h\n- item\n> quote\n1. one\n    code\n---",
}


def _gfm():
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table",
                                                                        "strikethrough"])


def _plain(inline) -> str:
    """What a reader sees of an inline token: its text and code, no markup."""
    return "".join(child.content for child in inline.children
                   if child.type in ("text", "code_inline"))


def _markup(inline) -> list[str]:
    return [child.type for child in inline.children if child.type not in ("text", "code_inline")]


def gfm_cells(row: str) -> list[str]:
    """The cells of a table row as cmark-gfm splits it: ``\\`` escapes the next character
    (so ``\\\\|`` splits), every other ``|`` is a delimiter, code spans included."""
    cells, current, index = [], "", 0
    while index < len(row):
        if row[index] == "\\":
            current += row[index:index + 2]
            index += 2
            continue
        if row[index] == "|":
            cells.append(current)
            current = ""
        else:
            current += row[index]
        index += 1
    return [*cells, current][1:-1]  # the row starts and ends with a delimiter


def assert_renders_safely(document: str) -> list:
    """Parse ``document``; assert it has no image, no HTML, one title, no heading but the
    lab's, and tables whose every row has the header's number of cells. Returns the tokens."""
    tokens = _gfm().parse(document)
    inlines = [child for token in tokens for child in token.children or []]
    assert not [t.type for t in [*tokens, *inlines]
                if t.type in ("image", "html_inline", "html_block")], document
    headings = [(token.tag, tokens[i + 1].content) for i, token in enumerate(tokens)
                if token.type == "heading_open"]
    assert [tag for tag, _ in headings].count("h1") == 1
    assert not [text for _, text in headings if text.strip() in ("heading", "h")]
    lines = document.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and index + 1 < len(lines) and lines[index + 1].startswith("|-"):
            width = len(gfm_cells(line))
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                assert len(gfm_cells(row)) == width, row
    return tokens


# The escaping functions, one value at a time.


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_text_renders_as_itself_on_one_line(value):
    # GIVEN a value a program supplied, WHEN it is written as a list item and as a table cell
    item = _gfm().parse(f"- {md.text(value)}")
    table = f"| h |\n|---|\n| {md.text(value)} |"
    [cell] = [t for t in _gfm().parse(table) if t.type == "inline"][1:]
    # THEN both read as the value, its line breaks folded to ↵, with no markup at all
    [inline] = [t for t in item if t.type == "inline"]
    assert _markup(inline) == [] and _markup(cell) == []
    assert _plain(inline) == _plain(cell) == md.fold(value)
    assert "\n" not in md.text(value) and len(gfm_cells(table.splitlines()[2])) == 1


@pytest.mark.parametrize("cell", [False, True], ids=["span", "table-cell"])
@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_code_renders_as_itself(value, cell):
    # GIVEN a value, WHEN it is written as a code span in a list item or in a table cell
    span = md.code(value, cell=cell)
    source = f"| h |\n|---|\n| {span} |" if cell else f"- {span}"
    [inline] = [t for t in _gfm().parse(source) if t.type == "inline"][-1:]
    # THEN a reader sees the value (folded), in one span, in one cell
    assert _markup(inline) == [] and _plain(inline) == md.fold(value)
    if cell:
        assert len(gfm_cells(source.splitlines()[2])) == 1


def test_a_fence_is_longer_than_any_backtick_run_inside():
    # GIVEN lines that try to close the block early, and a shell command with a newline
    lines = ["```", "````sh", "echo 'a\nb'"]
    # WHEN they are fenced
    [block] = [t for t in _gfm().parse("\n".join(md.fence(lines, "sh"))) if t.type == "fence"]
    # THEN one block holds them all, verbatim
    assert block.info == "sh" and block.content == "\n".join(lines) + "\n"


# The section generators, on a recorded evidence document (lab watch with gdb, Linux x86_64,
# of tests/programs/markdown_in_names.py run with -c and HOSTILE_ARG; environment trimmed).


@pytest.fixture
def recorded():
    return from_dict(json.loads(RECORDED.read_text()))


def test_recorded_evidence_is_hostile(recorded):
    assert HOSTILE_ARG in recorded.command and "a|b" in recorded.command
    assert any(t.name == COMM for p in recorded.processes for t in p.threads)
    assert any("|" in p.detail for p in recorded.processes)


def test_blocked_thread_is_one_item_with_the_call_and_the_name(recorded):
    blocked = render.culprit(recorded)
    # WHEN its blocking calls are formatted
    lines = list(render.format_blocking_calls(blocked))
    # THEN one list item per thread, whose code spans read the name and the decoded futex
    assert len(lines) == len(blocked.threads)
    [inline] = [t for t in _gfm().parse(lines[0]) if t.type == "inline"]
    spans = [c.content for c in inline.children if c.type == "code_inline"]
    assert spans[0] == COMM
    assert spans[1].startswith("futex(0x") and "FUTEX_WAIT_BITSET_PRIVATE|" in spans[1]
    assert spans[1].endswith("NULL (wait forever))")


def test_native_stack_is_one_block_that_counts_what_it_left_out(recorded):
    thread = recorded.debugger.threads[0]
    # WHEN the top 3 frames are formatted, with and without their source lines
    short = list(render.format_native_stack(thread, 3))
    long = list(render.format_native_stack(thread, 3, source=True))
    # THEN a fence around 3 frames and the count of the rest
    assert short[0] == short[-1] == "```" and len(short) == 3 + 3
    assert short[-2] == f"... {len(thread.frames) - 3} more frames in evidence.json"
    assert short[1].startswith("#0 ") and " at " in long[1] and " at " not in short[1]


def test_recorded_summary_renders_safely(recorded):
    # WHEN summary.md is rendered from the recorded evidence
    tokens = assert_renders_safely(render.summary_markdown(recorded))
    # THEN (and no heading, image or HTML came from the program, every table row is whole)
    # the argv reads as it was in the title, the thread name as it was in its code span
    assert _title(tokens).endswith(f"a|b {md.fold(HOSTILE_ARG)}: deadlock")
    assert COMM in _code_spans(tokens)


def test_recorded_report_renders_safely(recorded, tmp_path):
    # WHEN report.md is rendered from the recorded evidence
    tokens = assert_renders_safely(report_markdown(recorded, tmp_path / "no-results", tmp_path))
    # THEN the thread name reads as it was, and the command is one runnable shell block
    assert COMM in _code_spans(tokens)
    [command] = [t.content for t in tokens if t.type == "fence"][:1]
    assert command.endswith(" 'a|b' '" + HOSTILE_ARG + "'\n")


def test_a_secret_with_markdown_in_it_is_masked_before_it_is_escaped(recorded, tmp_path,
                                                                   monkeypatch):
    # GIVEN a secret of the lab's environment with metacharacters, in a detail of the run
    secret = "pl*nted|s3cret_<x>"
    monkeypatch.setenv("LAB_TEST_API_TOKEN", secret)
    recorded.processes[-1].detail += f" (saw {secret})"
    # WHEN the report is rendered
    text = report_markdown(recorded, tmp_path / "no-results", tmp_path)
    # THEN neither the secret nor its escaped form is in it; the mask is
    assert secret not in text and md.text(secret) not in text
    assert f"(saw {md.text('***REDACTED***')})" in text


def _title(tokens) -> str:
    [title] = [_plain(tokens[i + 1]) for i, t in enumerate(tokens)
               if t.type == "heading_open" and t.tag == "h1"]
    return title


def _code_spans(tokens) -> list[str]:
    return [child.content for t in tokens if t.type == "inline" for child in t.children
            if child.type == "code_inline"]


# A real run: lab watch of a program whose argv and thread names are Markdown.


@pytest.mark.skipif(sys.platform != "linux", reason="the lab watches processes on Linux")
def test_a_watched_program_cannot_write_markdown_into_the_run_documents(reaper, tmp_path):
    # GIVEN a deadlocking program with Markdown, HTML and "|" in its argv and its thread names
    debugger = "gdb" if shutil.which("gdb") else "none"
    code = (PROGRAMS / "markdown_in_names.py").read_text()
    # WHEN the lab watches it, then writes the report
    result = reaper.lab("watch", "--json", "--quiet", "--debugger", debugger, "--timeout", "60",
                        "--out", str(tmp_path), "--", sys.executable, "-c", code, "a|b",
                        HOSTILE_ARG)
    assert result.returncode == 12, result.stderr  # deadlock
    run_dir = Path(json.loads(result.stdout)["evidence_dir"])
    report = reaper.lab("report", str(run_dir), timeout=SHORT_TIMEOUT)
    assert report.returncode == 0, report.stderr
    summary = (run_dir / "summary.md").read_text()
    # THEN neither document has a heading, image or HTML of the program's, tables stay whole
    tokens = assert_renders_safely(summary)
    assert_renders_safely((run_dir / "report.md").read_text())
    # AND the program's values read as they were: the argv in the title and in the table, the
    # "|" of the futex operation inside its cell, the thread name
    cells = [_plain(t) for i, t in enumerate(tokens) if t.type == "inline" and
             tokens[i - 1].type == "td_open"]
    details = cells[5::6]
    assert any("FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME" in d for d in details), details
    assert all(d.endswith(" ".join([sys.executable, "-c", code])[:60].replace("\n", "↵"))
               for d in details), details
    assert _title(tokens).endswith(f"a|b {md.fold(HOSTILE_ARG)}: deadlock")
    assert COMM in _code_spans(tokens)
