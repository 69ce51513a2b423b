"""Redact secrets (keys, tokens, passwords, credentials in URLs) from anything the lab writes."""

from __future__ import annotations

import re

MASK = "***REDACTED***"

_SECRET_NAME = re.compile(
    r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|AUTH|COOKIE|SESSION_ID|PRIVATE)",
    re.IGNORECASE,
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^/@\s:]*:[^/@\s]*)@")
# Well-known token shapes, whatever variable or flag carries them.
_TOKEN_SHAPES = re.compile(
    r"\b(sk-[A-Za-z0-9_-]{8,}|ghp_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
    r"xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,})"
)
_FLAG = re.compile(
    r"^(--?[A-Za-z0-9_-]*?(key|token|secret|password|passwd|auth)[A-Za-z0-9_-]*)(=)(.*)$",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def text(value: str) -> str:
    """Mask credentials inside URLs and well-known token shapes in free text."""
    value = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", value)
    return _TOKEN_SHAPES.sub(MASK, value)


def environment(env: dict[str, str]) -> dict[str, str]:
    """Return a copy of ``env`` with secret-looking variables masked."""
    return {key: MASK if is_secret_name(key) else text(val) for key, val in sorted(env.items())}


def argv(args: list[str]) -> list[str]:
    """Mask values of secret-looking flags (``--api-key=X``, ``--token X``) and URL credentials."""
    result: list[str] = []
    mask_next = False
    for arg in args:
        if mask_next:
            result.append(MASK)
            mask_next = False
            continue
        match = _FLAG.match(arg)
        if match:
            result.append(f"{match.group(1)}={MASK}")
            continue
        if arg.startswith("-") and is_secret_name(arg) and "=" not in arg:
            mask_next = True
        if "=" in arg and not arg.startswith("-"):
            key, _, val = arg.partition("=")
            if is_secret_name(key):
                result.append(f"{key}={MASK}")
                continue
        result.append(text(arg))
    return result
