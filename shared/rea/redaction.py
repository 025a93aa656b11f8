"""Passwords out of what is shown: every URI that is logged, printed or recorded goes through
:func:`redact` first. Kept free of heavy imports: every process's logging uses it."""

from __future__ import annotations

import re

REDACTED = "***"
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^@\s/]+)(?=@)")
_QUERY_PASSWORD = re.compile(
    r"(?P<head>[?&](?:password|pwd|sasl_plain_password)=)(?P<secret>[^&\s\"']+)", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with the password of every URI in it (``scheme://user:password@host``, or a
    ``password=`` query parameter) replaced by ``***``: what may be logged, printed or recorded."""
    if "@" not in text and "=" not in text:
        return text
    return _QUERY_PASSWORD.sub(rf"\g<head>{REDACTED}", _URI_PASSWORD.sub(rf"\g<head>{REDACTED}", text))
