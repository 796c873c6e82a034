"""The streaming answer's wire format: Server-Sent Events frames as the upstream sends them
(``data: {"event": ..., "data": {...}}``, ``json.dumps``' default separators, non-ASCII
text as is), or raw text for ``media_type: text/plain``.

The headers go out with the ``start`` event, the tokens that arrive together in one write,
and the closing events with the end of the response: a stream of N network reads from the
LLM is N + 2 writes (decision ``query-02``).
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
    ``start`` event), where aiohttp's sends them on their own at ``prepare``."""

    _send_headers_immediately = False


class EventSink:
    """Writes the stream's events as SSE frames, or as raw text for ``media_type: text/plain``."""

    def __init__(self, response: web.StreamResponse, *, text: bool) -> None:
        self.response = response
        self.text = text

    async def start(self, conversation_id: str, request_id: str) -> None:
        if not self.text:
            await self.response.write(frame("start", {"conversation_id": conversation_id, "request_id": request_id}))

    async def tokens(self, first: int, tokens: Sequence[str]) -> None:
        """Tokens that arrived together, numbered from ``first``, in one write."""
        if self.text:
            await self.response.write("".join(tokens).encode())
        else:
            await self.response.write(token_frames(first, tokens))

    async def complete(self, index: int, answer: str, *, truncated: bool, usage: Usage) -> None:
        """The closing events and the end of the response, in one write (one packet on loopback)."""
        if self.text:
            await self.response.write_eof()
            return
        end = {
            "referenced_documents": [],
            "truncated": truncated,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        }
        await self.response.write_eof(
            frame("turn_complete", {"id": index, "token": answer}) + frame("end", end, available_quotas={})
        )

    async def interrupted(self, index: int, suffix: str, request_id: str) -> None:
        """The note after an interrupted answer, the ``interrupted`` event and the end, in one write."""
        if self.text:
            await self.response.write_eof(suffix.encode())
            return
        await self.response.write_eof(
            frame("token", {"id": index, "token": suffix}) + frame("interrupted", {"request_id": request_id})
        )

    async def fail(self, index: int, answer: str, exc: HttpError) -> None:
        """The answer was complete but the request failed (its records could not be stored):
        ``turn_complete``, then an ``error`` event in place of ``end``, and the end of the response."""
        if self.text:
            await self.response.write_eof(self._text_error(exc))
            return
        await self.response.write_eof(frame("turn_complete", {"id": index, "token": answer}) + self._error_frame(exc))

    async def error(self, exc: HttpError) -> None:
        """An ``error`` event (the response goes on; the caller ends it)."""
        await self.response.write(self._text_error(exc) if self.text else self._error_frame(exc))

    @staticmethod
    def _text_error(exc: HttpError) -> bytes:
        # The upstream's plain-text error line, written right after the tokens sent so far.
        return f"Status: {exc.status} - {exc.response} - {exc.cause}".encode()

    @staticmethod
    def _error_frame(exc: HttpError) -> bytes:
        return frame("error", {"status_code": exc.status, "response": exc.response, "cause": exc.cause})
