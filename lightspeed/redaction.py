"""Redaction: the configuration's ``query_filters`` applied before the LLM or the store sees text.

Each filter is a regular expression (validated at config load) whose every match is
replaced with ``replace_with``; filters apply in the order configured, each to the
output of the one before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from lightspeed.config import QueryFilter

__all__ = ["Redactor"]


class Redactor:
    """Applies a list of :class:`~lightspeed.config.QueryFilter` to text."""

    def __init__(self, filters: Sequence[QueryFilter]) -> None:
        self.filters = tuple(filters)
        self._compiled = tuple((re.compile(f.pattern), f.replace_with) for f in filters)

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def redact(self, text: str) -> str:
        """``text`` with every filter applied (unchanged when no filter matches).

        ``replace_with`` is literal text: backslashes and group references are not expanded.
        """
        for pattern, replacement in self._compiled:
            text = pattern.sub(_literal(replacement), text)
        return text


def _literal(replacement: str) -> Callable[[re.Match[str]], str]:
    def replace(_match: re.Match[str]) -> str:
        return replacement

    return replace
