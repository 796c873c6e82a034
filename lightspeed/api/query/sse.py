"""The streaming answer's wire format: Server-Sent Events frames as the upstream sends them
(``data: {"event": ..., "data": {...}}``), or raw text for ``media_type: text/plain``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from lightspeed.errors import HttpError
from lightspeed.llm import Usage

__all__ = ["EventSink", "frame"]


def frame(event: str, data: dict[str, Any], **extra: Any) -> bytes:
    return b"data: " + json.dumps({"event": event, "data": data, **extra}, ensure_ascii=False).encode() + b"\n\n"


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
            frames = (frame("token", {"id": first + i, "token": t}) for i, t in enumerate(tokens))
            await self.response.write(b"".join(frames))

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
