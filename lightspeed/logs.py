"""The service's log: one line per record, nothing forged, no secret.

:func:`setup_logging` sends every logger (ours, aiohttp's, plugins') to stderr through
:class:`LogFormatter`, which

* masks every configured secret and every credential-looking value
  (:data:`~lightspeed.masking.LOG_SECRETS`), wherever it appears in the line;
* replaces the value of every ``user_id=`` query parameter in the line (aiohttp quotes the
  request line of a malformed request) with its SHA-256, as transcripts store user ids;
* escapes control characters in the message (``\\n``, ``\\r``, ANSI escapes...), so a value
  taken from a request can neither start a line of its own nor repaint the terminal;
* indents every line of a traceback, so a line that starts at column 0 always begins a record.

Plain escaped text rather than JSON lines: the format operators already read and grep stays
as it was, and escaping in the formatter covers every logger at once, including the ones we
do not write; a JSON pipeline can parse these lines with one regular expression.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from collections.abc import Iterable
from typing import Final

from lightspeed.masking import LOG_SECRETS, escape_controls

__all__ = ["LOG_FORMAT", "LogFormatter", "setup_logging"]

LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s [pid %(process)d] %(message)s"
_INDENT: Final = "    "
_USER_ID_PARAMETER: Final = re.compile(r"([?&]user_id=)(?!sha256:)([^&\s'\"#]*)")


def _hash_user_id(match: re.Match[str]) -> str:
    return f"{match.group(1)}sha256:{hashlib.sha256(match.group(2).encode()).hexdigest()}"


class LogFormatter(logging.Formatter):
    """Masks secrets, escapes control characters, indents tracebacks (see the module documentation)."""

    def format(self, record: logging.LogRecord) -> str:
        message = _USER_ID_PARAMETER.sub(_hash_user_id, LOG_SECRETS.mask(record.getMessage()))
        record.message = escape_controls(message, backslashes=False)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        blocks: list[str] = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            blocks.append(record.exc_text)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            lines = LOG_SECRETS.mask(block).splitlines()
            line += "".join(f"\n{_INDENT}{escape_controls(part, backslashes=False)}" for part in lines)
        return line


class _BadRequestsWithoutTracebacks(logging.Filter):
    """aiohttp logs a malformed request (a header over 8 KiB, a broken request line) with a
    traceback at ERROR; the client got its 400, so one WARNING line is enough for operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import BadHttpMessage

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.msg = f"{record.msg}: %s"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()), " ".join(str(exc).split()))
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def setup_logging(level: str, *, secrets: Iterable[str] = ()) -> None:
    """Log at ``level`` to stderr through :class:`LogFormatter`, masking ``secrets`` from now on."""
    LOG_SECRETS.add(*secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestsWithoutTracebacks) for f in server_log.filters):
        server_log.addFilter(_BadRequestsWithoutTracebacks())
