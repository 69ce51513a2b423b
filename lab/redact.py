"""Redact secrets (keys, tokens, passwords, credentials in URLs, known values) from lab output."""

from __future__ import annotations

import os
import re
import string
import threading
from collections.abc import Iterable, Mapping

MASK = "***REDACTED***"
# text() reads at most CHUNK + OVERLAP characters at once and moves on by at least CHUNK: the
# time stays linear and bounded per step, even for a 300 MB line. A secret of up to OVERLAP
# characters that straddles the end of one chunk lies whole inside that chunk's window.
CHUNK = 1 << 20
OVERLAP = 1 << 14  # a PEM private key block (RSA 4096: 3.3 KB) lies whole in one window
# learn() remembers secret values this long at least (shorter ones, "true" or "1", would mask
# half of every text) and this many at most (one regex holds them all).
MIN_LEARNED = 6
MAX_LEARNED = 256

_SECRET_NAME = re.compile(
    r"PASS|PWD|SECRET|TOKEN|KEY|WEBHOOK|CREDENTIAL|AUTH|COOKIE|SESSION_?ID|PRIVATE",
    re.IGNORECASE,
)
# Names that match the words above but hold nothing secret. PWD and OLDPWD are the shell's
# working directories (MYSQL_PWD, by contrast, is MySQL's password); TOKENIZERS_PARALLELISM is
# the Hugging Face fork switch a fork-after-threads report must show.
HARMLESS_NAMES = frozenset({"PWD", "OLDPWD", "TOKENIZERS_PARALLELISM"})
# A `mysql -pSECRET` password is glued to -p; for other programs -p is a pid or a port.
_MYSQL_CLIENTS = ("mysql", "mariadb")
_AUTH_HEADERS = ("authorization", "proxy-authorization")
_AUTH_SCHEMES = ("bearer", "basic", "token", "digest", "negotiate")
_USER_FLAGS = ("-u", "-U", "--user", "--proxy-user")  # curl's USER:PASSWORD, in the next arg
# NAME=VALUE and --name=VALUE arguments; a longer text with a "=" in it (a `python -c`
# program) is masked by text() instead, or its code before the "=" would be kept as a name.
_ARG_NAME = re.compile(r"-{0,2}[A-Za-z_][\w.-]{0,127}")

# The rules run on an ASCII-lowercased copy of the text (the same length, so its positions are
# the text's), each only where its trigger word occurs, so a line without one costs a few
# substring searches. Each starts with its trigger, then matches a bounded run, then at most one
# run of a class that the match ends with: no rule rescans text it failed on, so each search is
# linear. (The old URL rule began with the scheme, "[a-zA-Z][a-zA-Z0-9+.-]*://", and was tried
# from every letter of a long run of letters, digits and dots: quadratic.) Group ``keep`` is the
# part shown before the mask, group ``tail`` the part shown after it.
_VALUE = r"[^\s\"',;&{}\[\]]+(?P<tail>)"  # never JSON's braces: `"pass": {` is a key
_SEP = r"[\"']?[ \t]{0,8}[=:][ \t]{0,8}[\"']?"  # password=, "api_key": ", PASS :
_RULES = tuple((trigger, re.compile(pattern)) for trigger, pattern in (
    # scheme://user:password@host: the password up to the "@" after which no other "@"
    # comes before the next "/" (the host's), so that one holding "/" or "@"
    # (postgres://app:pw/x9z@db, u:p@ss@h) is masked whole; a try stops at the next "://",
    # so a line of "://a:" repeated stays linear
    ("://", r"(?P<keep>://[^/@\s:\"']{0,256}:)(?:(?!://)[^\s\"']){0,2048}?(?P<tail>@)"
            r"(?![^\s\"'/]{0,2048}@)"),
    # curl's -u/--user/--proxy-user USER:PASSWORD (also glued: -uUSER:PASSWORD, --user=...)
    ("-u", r"(?P<keep>(?<![\w-])-u(?:[ \t]{1,8})?[^\s:\"'-][^\s:\"']{0,255}:)[^\s\"']+(?P<tail>)"),
    ("-user", r"(?P<keep>--(?:proxy-)?user(?:=|[ \t]{1,8})[^\s:\"']{1,256}:)[^\s\"']+(?P<tail>)"),
    # a PEM private key, from its BEGIN line to its END line
    ("-----begin", r"(?P<keep>-----begin [a-z0-9 ]{0,40}private key-----)"
                   r"(?:(?!-----)[\s\S]){1,12000}?(?P<tail>-----end [a-z0-9 ]{0,40}private "
                   r"key-----)"),
    ("authorization", rf"(?P<keep>authorization{_SEP}(?:(?:{'|'.join(_AUTH_SCHEMES)})"
                      rf"[ \t]{{1,8}})?){_VALUE}"),
    ("bearer", rf"(?P<keep>bearer[ \t]{{1,8}}){_VALUE}"),
    # password=..., DB_PASS: ..., "api_key": "...", MYSQL_PWD=..., --db-pass=...
    ("pass", rf"(?P<keep>pass(?:word|wd|phrase)?{_SEP}){_VALUE}"),
    ("secret", rf"(?P<keep>secret{_SEP}){_VALUE}"),
    ("token", rf"(?P<keep>token{_SEP}){_VALUE}"),
    ("apikey", rf"(?P<keep>apikey{_SEP}){_VALUE}"),
    ("credential", rf"(?P<keep>credentials?{_SEP}){_VALUE}"),
    ("webhook", rf"(?P<keep>webhook(?:[_-]?url)?{_SEP}){_VALUE}"),
    ("pwd", rf"(?P<keep>[_.-]pwd{_SEP}){_VALUE}"),
    ("key", rf"(?P<keep>[_.-]key{_SEP}){_VALUE}"),
    ("auth", rf"(?P<keep>[_.-]auth{_SEP}){_VALUE}"),
    # Well-known token shapes, whatever variable or flag carries them (AWS key ids, lowered).
    ("sk-", r"(?P<keep>)\bsk-[a-z0-9_-]{8,}(?P<tail>)"),
    ("ghp_", r"(?P<keep>)\bghp_[a-z0-9]{20,}(?P<tail>)"),
    ("github_pat_", r"(?P<keep>)\bgithub_pat_[a-z0-9_]{20,}(?P<tail>)"),
    ("xox", r"(?P<keep>)\bxox[abprs]-[a-z0-9-]{10,}(?P<tail>)"),
    ("akia", r"(?P<keep>)\bakia[0-9a-z]{16}(?P<tail>)"),
    ("hf_", r"(?P<keep>)\bhf_[a-z0-9]{20,}(?P<tail>)"),
))
_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

_lock = threading.Lock()
_learned: set[str] = set()
_learned_pattern: re.Pattern | None = None


def is_secret_name(name: str) -> bool:
    """Whether a variable or flag named ``name`` holds a secret (``DB_PASS``, ``--api-key``)."""
    return name.upper() not in HARMLESS_NAMES and bool(_SECRET_NAME.search(name))


def learn(env: Mapping[str, str]) -> None:
    """Remember the values of ``env``'s secret variables, process-wide: ``text()`` masks them
    wherever they appear from now on. Each line of a value counts alone (output is redacted
    line by line); lines shorter than MIN_LEARNED, and values that name an existing file
    (GIT_ASKPASS, SSH_AUTH_SOCK: the path is no secret), are not remembered."""
    _remember(value for name, value in env.items() if is_secret_name(name))


def forget() -> None:
    """Forget every learned value (tests start from a clean slate with it)."""
    global _learned_pattern
    with _lock:
        _learned.clear()
        _learned_pattern = None


def _remember(values: Iterable[str]) -> None:
    global _learned_pattern
    found = set()
    for value in values:
        if not (value.startswith("/") and os.path.exists(value)):
            found.update(line.strip().translate(_LOWER) for line in value.splitlines()
                         if MIN_LEARNED <= len(line.strip()) <= OVERLAP)
    with _lock:
        new = found - _learned
        room = MAX_LEARNED - len(_learned)
        if not new or room <= 0:
            return
        _learned.update(sorted(new, key=lambda v: (-len(v), v))[:room])
        # One regex for all, matched in the lowercased text: the values as a trie, so each
        # position costs a walk down it, not a comparison with every value.
        _learned_pattern = re.compile(f"(?P<keep>)(?:{_trie(_learned)})(?P<tail>)")


def _trie(values: Iterable[str], depth: int = 8) -> str:
    """A regex matching any of ``values``, the longest first: a trie of their first ``depth``
    characters (deeper nesting would only make the regex compiler recurse), then the rest."""
    if depth == 0:
        rests = sorted(values, key=lambda v: (-len(v), v))
        return "(?:" + "|".join(re.escape(rest) for rest in rests) + ")"
    children: dict[str, list[str]] = {}
    for value in values:
        if value:
            children.setdefault(value[0], []).append(value[1:])
    branches = [re.escape(char) + _trie(rests, depth - 1) if any(rests) else re.escape(char)
                for char, rests in sorted(children.items())]
    body = "(?:" + "|".join(branches) + ")"
    return body + "?" if "" in values else body


def text(value: str) -> str:
    """``value`` with secrets masked: URL credentials, Authorization and Bearer values,
    ``password=...``-style assignments, well-known token shapes and every learned value (in
    any case). Linear in the length of ``value``, which is read in windows of CHUNK + OVERLAP
    characters."""
    size = len(value)
    out: list[str] = []
    pos = 0
    while pos < size:
        end = min(size, pos + CHUNK + OVERLAP)
        limit = pos + CHUNK if end < size else end
        last = pos
        for start, stop, keep, tail in _secrets(value[pos:end], pos, limit):
            out += (value[last:start], value[start:keep], MASK, value[tail:stop])
            last = stop
        cut = max(limit, last)
        out.append(value[last:cut])
        pos = cut
    return "".join(out) if len(out) != 1 else value


def _secrets(window: str, offset: int, limit: int) -> list[tuple[int, int, int, int]]:
    """``(start, end, end of the part kept before the mask, start of the part kept after it)``
    of each secret in ``window`` (which starts at ``offset`` in the text) that starts before
    ``limit``, in order, none overlapping: where two rules overlap the first-starting wins.
    A later window starts before any secret left out, and sees all of it."""
    low = window.translate(_LOWER)
    patterns = [pattern for trigger, pattern in _RULES if trigger in low]
    learned = _learned_pattern
    if learned is not None:
        patterns.append(learned)
    found = []
    for pattern in patterns:
        for match in pattern.finditer(low):
            if match.start() >= limit - offset:
                break
            found.append((match.start(), -match.end(), match.end("keep"), match.start("tail")))
    found.sort()
    spans, last = [], 0
    for start, stop, keep, tail in found:
        if start >= last:
            spans.append((offset + start, offset - stop, offset + keep, offset + tail))
            last = -stop
    return spans


_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----")


class KeyBlocks:
    """Line by line (a program's output), what ``text`` does in one text: the lines of a PEM
    private key between its BEGIN and END lines are masked. One per stream of lines."""

    def __init__(self):
        self.inside = False

    def line(self, value: str) -> str:
        """``value`` (one line, redacted by ``text`` already) with a key's body masked."""
        if self.inside:
            if _PEM_END.search(value):
                self.inside = False
                return value[_PEM_END.search(value).start():]
            return MASK + ("\n" if value.endswith("\n") else "")
        begin = _PEM_BEGIN.search(value)
        if begin and not _PEM_END.search(value, begin.end()):
            self.inside = True
            return value[:begin.end()] + "\n"
        return value


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` with secret variables masked and secrets in the others' values; the
    secret values are learned (see ``learn``), so later text is masked too."""
    learn(env)
    return {key: MASK if is_secret_name(key) else text(val) for key, val in sorted(env.items())}


def argv(args: Iterable[str]) -> list[str]:
    """``args`` with secret values masked: ``--api-key=X``, ``--db-pass X``, ``DB_PASS=X``,
    ``mysql -pX``, the value after ``Authorization:`` or ``Bearer``, and whatever ``text``
    masks inside any argument. The values masked whole are learned (see ``learn``): a
    program that prints its command line prints them again."""
    result: list[str] = []
    secrets: list[str] = []
    mask_next = header = mysql = user_next = False
    for arg in args:
        word = arg.strip().rstrip(":").lower()
        if header and word in _AUTH_SCHEMES:  # "Authorization:" "Bearer" "VALUE"
            header, mask_next = False, True
            result.append(arg)
            continue
        if mask_next or header:
            secrets.append(arg)
            result.append(MASK)
            mask_next = header = False
            continue
        mysql = mysql or os.path.basename(arg).lower().startswith(_MYSQL_CLIENTS)
        name, equals, value = arg.partition("=")
        if equals and _ARG_NAME.fullmatch(name) and is_secret_name(name):
            secrets.append(value)
            result.append(f"{name}={MASK}")
            continue
        if arg.startswith("-") and not equals and is_secret_name(arg):
            mask_next = True  # --db-pass VALUE
        elif mysql and arg.startswith("-p") and len(arg) > 2:
            secrets.append(arg[2:])
            result.append(f"-p{MASK}")
            continue
        if user_next and ":" in arg:  # curl -u USER:PASSWORD
            user, _, password = arg.partition(":")
            secrets.append(password)
            result.append(f"{text(user)}:{MASK}")
            user_next = False
            continue
        user_next = arg in _USER_FLAGS
        header = word in _AUTH_HEADERS
        mask_next = mask_next or word == "bearer"
        result.append(text(arg))
    _remember(secrets)
    return result
