"""The streaming answer's wire format: Server-Sent Events frames as the upstream sends them
(``data: {"event": ..., "data": {...}}``, ``json.dumps``' default separators, non-ASCII
text as is), or raw text for ``media_type: text/plain``.

Events are held while the provider has more at hand and written when it must wait for the
network (and before the records are stored): the headers, ``start`` and the tokens already
there leave in one write, then the tokens of each network read in one write, then the
closing events with the end of the response (decision ``query-02``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any, Final

from aiohttp import web

from lightspeed.errors import HttpError
from lightspeed.llm import Usage

__all__ = ["EventSink", "EventStreamResponse", "frame", "token_frames"]

#: ``json.dumps(..., ensure_ascii=False)`` builds an encoder per call; this one is built once.
_encode: Final = json.JSONEncoder(ensure_ascii=False).encode


def frame(event: str, data: dict[str, Any], **extra: Any) -> bytes:
    return b"data: " + _encode({"event": event, "data": data, **extra}).encode() + b"\n\n"


def token_frames(first: int, tokens: Sequence[str]) -> bytes:
    """The ``token`` events of ``tokens``, numbered from ``first``: byte for byte what
    :func:`frame` gives, from a template (the stream's most frequent event, a JSON encoder
    call for each one was a tenth of a stream's CPU)."""
    return "".join(
        [
            f'data: {{"event": "token", "data": {{"id": {first + i}, "token": {encode_basestring(t)}}}}}\n\n'
            for i, t in enumerate(tokens)
        ]
    ).encode()


class EventStreamResponse(web.StreamResponse):
    """A streamed response whose headers wait for its first write (one packet with the
    first events), where aiohttp's sends them on their own at ``prepare``."""

    _send_headers_immediately = False


#: Held events are sent once they reach this size, whatever the provider does.
FLUSH_BYTES: Final = 64 * 1024


class EventSink:
    """Writes the stream's events as SSE frames, or as raw text for ``media_type: text/plain``.

    Events are held until :meth:`flush` (called when the provider waits for the network,
    and when the answer is complete) or until the next closing write, which carries them:
    what arrived together leaves together, in one write.
    """

    def __init__(self, response: web.StreamResponse, *, text: bool) -> None:
        self.response = response
        self.text = text
        self._held: list[bytes] = []
        self._held_bytes = 0

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._held_bytes += len(data)

    def _with_held(self, data: bytes = b"") -> bytes:
        """``data`` after the held events (which are then no longer held)."""
        if not self._held:
            return data
        self._held.append(data)
        out = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        return out

    async def flush(self) -> None:
        """Send the held events now."""
        if self._held:
            await self.response.write(self._with_held())

    def start(self, conversation_id: str, request_id: str) -> None:
        """The ``start`` event (held: it leaves with the first tokens that are already there)."""
        if not self.text:
            self._hold(frame("start", {"conversation_id": conversation_id, "request_id": request_id}))

    async def tokens(self, first: int, tokens: Sequence[str]) -> None:
        """Tokens that arrived together, numbered from ``first`` (held)."""
        self._hold("".join(tokens).encode() if self.text else token_frames(first, tokens))
        if self._held_bytes >= FLUSH_BYTES:
            await self.flush()

    async def complete(self, index: int, answer: str, *, truncated: bool, usage: Usage) -> None:
        """The closing events and the end of the response, in one write (one packet on loopback)."""
        if self.text:
            await self.response.write_eof(self._with_held())
            return
        end = {
            "referenced_documents": [],
            "truncated": truncated,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        }
        await self.response.write_eof(
            self._with_held(
                frame("turn_complete", {"id": index, "token": answer}) + frame("end", end, available_quotas={})
            )
        )

    async def interrupted(self, index: int, suffix: str, request_id: str) -> None:
        """The note after an interrupted answer, the ``interrupted`` event and the end, in one write."""
        if self.text:
            await self.response.write_eof(self._with_held(suffix.encode()))
            return
        await self.response.write_eof(
            self._with_held(
                frame("token", {"id": index, "token": suffix}) + frame("interrupted", {"request_id": request_id})
            )
        )

    async def fail(self, index: int, answer: str, exc: HttpError) -> None:
        """The answer was complete but the request failed (its records could not be stored):
        ``turn_complete``, then an ``error`` event in place of ``end``, and the end of the response."""
        if self.text:
            await self.response.write_eof(self._with_held(self._text_error(exc)))
            return
        await self.response.write_eof(
            self._with_held(frame("turn_complete", {"id": index, "token": answer}) + self._error_frame(exc))
        )

    async def error(self, exc: HttpError) -> None:
        """An ``error`` event (the response goes on; the caller ends it)."""
        await self.response.write(self._with_held(self._text_error(exc) if self.text else self._error_frame(exc)))

    @staticmethod
    def _text_error(exc: HttpError) -> bytes:
        # The upstream's plain-text error line, written right after the tokens sent so far.
        return f"Status: {exc.status} - {exc.response} - {exc.cause}".encode()

    @staticmethod
    def _error_frame(exc: HttpError) -> bytes:
        return frame("error", {"status_code": exc.status, "response": exc.response, "cause": exc.cause})
