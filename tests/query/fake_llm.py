"""A real OpenAI-compatible chat completions server for tests, on 127.0.0.1 and a free port.

The model named in a request picks the behaviour:

``fake-model``   answers ``You asked: <last user message>``, whole or streamed word by word,
                 with token usage; a message of content parts is its text parts, then
                 ``(image: <media type>, <bytes> bytes)`` for each ``image_url`` part (a
                 data URL that is not base64 is a 400, as OpenAI answers);
``slow``         streams :attr:`FakeLLM.slow_tokens` tokens, one every :attr:`FakeLLM.slow_delay` s;
``hang``         says nothing for :attr:`FakeLLM.hang_seconds` s (provider timeouts);
``drop``         streams three tokens, then closes the connection without ending the answer
                 (whole answers: closes the connection before answering);
``ratelimit``    429 with ``Retry-After: 7`` and an OpenAI-style error body;
``broken``       500;
``malformed``    streams one good chunk, then a chunk that is not JSON (whole answers: not JSON);
``surrogate``    streams one good chunk, then one whose text holds a lone surrogate (``"\\ud800"``:
                 valid JSON, not text); whole answers: that text;
``reject``       400 with an OpenAI-style error body (context too long);
``denied``       401 (a wrong API key);
``gone``         404 (the server does not know the model);
``leak401``      401 whose JSON body echoes the request's headers, path and query string and
                 names the key by its last four characters, as OpenAI does;
``leak500``      500 whose plain-text body echoes the headers, path and query string;
``leakstream``   streams one token, then an ``error`` chunk echoing the headers and query;
``leakchunk``    streams one token, then a chunk that is not JSON, echoing the headers.

``base_path`` is where the API is served (``/v1``; a Llama Stack serves it at ``/v1/openai/v1``);
``listed`` is what ``GET {base_path}/models`` answers (Llama Stack's items when given, with
``provider/model`` identifiers, whose ``provider/`` is ignored when choosing the behaviour).

Every request body is kept in :attr:`FakeLLM.requests`, every ``Authorization`` header in
:attr:`FakeLLM.auth_headers` and every path with its query string in :attr:`FakeLLM.targets`
(unless ``keep_requests`` is false). Any path ending in ``chat/completions`` is served. ``delay`` seconds pass
before every answer (a stand-in for the model's thinking time in benchmarks).

Run on its own for benchmarks: ``python tests/query/fake_llm.py --port 8000 --delay-ms 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import re
from typing import Any

from aiohttp import web

MODELS = (
    "fake-model",
    "slow",
    "hang",
    "drop",
    "ratelimit",
    "broken",
    "malformed",
    "surrogate",
    "reject",
    "badrequest",
    "denied",
    "gone",
    "leak401",
    "leak500",
    "leakstream",
    "leakchunk",
)


def message_text(content: str | list[dict[str, Any]]) -> str:
    """A message's content as text: itself, or its parts (text, and a note per image)."""
    if isinstance(content, str):
        return content
    out = []
    for part in content:
        if part["type"] == "text":
            out.append(part["text"])
        else:
            media, data = _data_url(part["image_url"]["url"])
            out.append(f"(image: {media}, {len(data)} bytes)")
    return " ".join(out)


def _data_url(url: str) -> tuple[str, bytes]:
    """The media type and bytes of a ``data:<type>;base64,<data>`` URL; ValueError otherwise."""
    match = re.fullmatch(r"data:([\w/.+-]+);base64,([A-Za-z0-9+/]*={0,2})", url)
    if match is None:
        raise ValueError(f"not a base64 data URL: {url[:40]!r}")
    return match[1], base64.b64decode(match[2], validate=True)


def answer_for(messages: list[dict[str, Any]]) -> str:
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"You asked: {message_text(last)}"


def words(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*|\s+", text)


def _chunk(content: str | None = None, *, usage: dict[str, int] | None = None) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "model": "fake",
        "choices": [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    if usage is not None:
        data["usage"] = usage
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class FakeLLM:
    """Start with ``await fake.start()``, stop with ``await fake.stop()``; ``url`` ends in ``/v1``."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        keep_requests: bool = True,
        base_path: str = "/v1",
        listed: list[dict[str, Any]] | None = None,
    ) -> None:
        self.delay = delay
        self.base_path = base_path
        self.listed = listed if listed is not None else [{"id": m, "object": "model"} for m in MODELS]
        self.model_list_requests = 0
        self.keep_requests = keep_requests
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.targets: list[str] = []
        self.slow_tokens = 200
        self.slow_delay = 0.02
        self.hang_seconds = 5.0
        self.url = ""
        self._runner: web.AppRunner | None = None
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{prefix:.*}chat/completions", self.chat)
        app.router.add_get("/{prefix:.*}models", self.models)
        self._app = app

    async def start(self, port: int = 0) -> FakeLLM:
        self._runner = web.AppRunner(self._app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.root_url = f"http://127.0.0.1:{port}"
        self.url = self.root_url + self.base_path
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def received_text(self) -> str:
        """Everything every request sent, as one string (for leak checks)."""
        return json.dumps(self.requests, ensure_ascii=False)

    async def models(self, request: web.Request) -> web.Response:
        self.model_list_requests += 1
        if self.keep_requests:
            self.auth_headers.append(request.headers.get("Authorization"))
        return web.json_response({"object": "list", "data": self.listed})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.keep_requests:
            self.requests.append(body)
            self.auth_headers.append(request.headers.get("Authorization"))
            self.targets.append(request.path_qs)
        if self.delay:
            await asyncio.sleep(self.delay)
        model = body["model"].rpartition("/")[2]
        stream = bool(body.get("stream"))
        if model == "ratelimit":
            return web.json_response(
                {"error": {"message": "Rate limit reached for requests", "type": "requests"}},
                status=429,
                headers={"Retry-After": "7"},
            )
        if model == "broken":
            return web.json_response({"error": {"message": "internal failure"}}, status=500)
        if model == "reject":
            return web.json_response(
                {"error": {"message": "This model's maximum context length is 8 tokens"}}, status=400
            )
        if model == "badrequest":
            return web.json_response({"error": {"message": "Invalid value for 'top_p'"}}, status=400)
        if model == "denied":
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        if model == "gone":
            return web.json_response({"error": {"message": "The model `gone` does not exist"}}, status=404)
        echoed = f"headers {dict(request.headers)!r} target {request.path_qs} {request.url}"
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if model == "leak401":
            said = f"Incorrect API key provided: sk-...{key[-4:]}. You sent {echoed}"
            return web.json_response({"error": {"message": said, "type": "invalid_request_error"}}, status=401)
        if model == "leak500":
            return web.Response(text=f"upstream gateway failure: {echoed}", status=500)
        if model == "hang":
            await asyncio.sleep(self.hang_seconds)
        if model == "drop" and not stream:
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(1)
        try:
            answer = answer_for(body["messages"])
        except (ValueError, binascii.Error) as exc:
            return web.json_response({"error": {"message": f"Invalid image: {exc}"}}, status=400)
        prompt_tokens = sum(len(message_text(m["content"]).split()) for m in body["messages"])
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(answer.split())}
        if model == "surrogate":
            answer = "half \ud800 a pair"
        if not stream:
            if model == "malformed":
                return web.Response(text="{not json", content_type="application/json")
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await response.prepare(request)
            if model == "slow":
                for i in range(self.slow_tokens):
                    await response.write(_chunk(f"t{i} "))
                    await asyncio.sleep(self.slow_delay)
            elif model == "drop":
                for token in words(answer)[:3]:
                    await response.write(_chunk(token))
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.close()
                return response
            elif model in ("leakstream", "leakchunk"):
                await response.write(_chunk("Partial "))
                if model == "leakstream":
                    await response.write(b"data: " + json.dumps({"error": {"message": echoed}}).encode() + b"\n\n")
                else:
                    await response.write(f"data: {{oops {echoed}\n\n".encode())
            elif model == "malformed":
                await response.write(_chunk("Fine "))
                await response.write(b"data: {not json\n\n")
            elif model == "surrogate":
                await response.write(_chunk("Fine "))
                await response.write(_chunk(answer))
            else:
                await response.write(b": keep-alive comment\n\n")
                for token in words(answer):
                    await response.write(_chunk(token))
            await response.write(_chunk(usage=usage))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        except ConnectionResetError:  # the client went away mid-answer (as load generators do at the end)
            return response


async def _serve(port: int, delay: float) -> None:
    fake = await FakeLLM(delay=delay, keep_requests=False).start(port)
    print(fake.url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="An OpenAI-compatible fake LLM server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait this long before every answer")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
