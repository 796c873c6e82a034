"""The log formatter: secrets masked, control characters escaped, tracebacks indented."""

from __future__ import annotations

import logging
import sys

from lightspeed.logs import LOG_FORMAT, LogFormatter
from lightspeed.masking import LOG_SECRETS


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = sys.exc_info() if exc else None
    return logging.LogRecord("lightspeed.test", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_a_message_is_one_line_with_its_secrets_masked() -> None:
    LOG_SECRETS.add("configured-secret-4711")
    line = LogFormatter(LOG_FORMAT).format(
        _record("got %r from %s", "configured-secret-4711\nFAKE LINE\x1b[2J", "/q?user_id=alice&x=1")
    )
    assert "\n" not in line and "\x1b" not in line
    assert "configured-secret-4711" not in line and "********" in line
    assert "\\nFAKE LINE\\x1b[2J" in line
    assert "alice" not in line and "user_id=sha256:2bd806c97f0e00af" in line


def test_a_traceback_is_indented_so_its_message_cannot_start_a_record() -> None:
    try:
        raise ValueError("bad input\n2026-01-01 00:00:00,000 INFO    forged Authorization: Bearer abcdef0123456789")
    except ValueError:
        record = _record("failed", exc=True)
    lines = LogFormatter(LOG_FORMAT).format(record).splitlines()
    assert lines[0].endswith("failed")
    assert all(line.startswith("    ") for line in lines[1:])
    assert lines[1] == "    Traceback (most recent call last):"
    assert "abcdef0123456789" not in "\n".join(lines)
