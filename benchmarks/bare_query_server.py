"""The reference server of the query benchmark: one aiohttp handler per endpoint, no framework of ours.

``POST /v1/query`` reads the JSON body, asks the OpenAI-compatible LLM at ``--llm-url`` with
aiohttp's client (the system prompt and the query) and answers the upstream's response body;
``POST /v1/streaming_query`` asks for a stream and sends each token on as an SSE ``token``
event (one write per chunk read), then ``turn_complete`` and ``end``. Nothing is validated,
authenticated, counted or stored: what HTTP in, the LLM call and HTTP out cost on their own,
the upper bound of the service on this machine (``benchmarks/query_overhead.py --bare``).

Run: ``python benchmarks/bare_query_server.py --port 8082 --llm-url http://127.0.0.1:8000/v1``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
SYSTEM = "You are a helpful assistant"


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps({"event": event, "data": data}).encode() + b"\n\n"


def make_app(llm_url: str) -> web.Application:
    url = llm_url.rstrip("/") + "/chat/completions"

    def llm_body(body: dict[str, Any], *, stream: bool) -> bytes:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body["query"]}]
        return json.dumps({"model": "fake-model", "messages": messages, "stream": stream}).encode()

    async def query(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        cid = body.get("conversation_id") or str(uuid.uuid4())
        async with request.app[SESSION].post(
            url, data=llm_body(body, stream=False), headers={"Content-Type": "application/json"}
        ) as resp:
            answer = json.loads(await resp.read())
        text = answer["choices"][0]["message"]["content"]
        return web.json_response({"conversation_id": cid, "response": text, "truncated": False})

    async def streaming_query(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        cid = body.get("conversation_id") or str(uuid.uuid4())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        with contextlib.suppress(ConnectionResetError):  # the load generator went away at its end
            await _stream(request, response, cid, body)
        return response

    async def _stream(request: web.Request, response: web.StreamResponse, cid: str, body: dict[str, Any]) -> None:
        await response.prepare(request)
        await response.write(_frame("start", {"conversation_id": cid}))
        parts: list[str] = []
        async with request.app[SESSION].post(
            url, data=llm_body(body, stream=True), headers={"Content-Type": "application/json"}
        ) as resp:
            rest = b""
            while data := await resp.content.readany():
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                out = []
                for line in lines:
                    if line.startswith(b"data: {"):
                        for choice in json.loads(line[6:]).get("choices") or ():
                            token = choice["delta"].get("content")
                            if token:
                                out.append(_frame("token", {"id": len(parts), "token": token}))
                                parts.append(token)
                if out:
                    await response.write(b"".join(out))
        answer = "".join(parts)
        await response.write_eof(
            _frame("turn_complete", {"id": len(parts), "token": answer}) + _frame("end", {"truncated": False})
        )

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[SESSION] = session
            yield

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/query", query)
    app.router.add_post("/v1/streaming_query", streaming_query)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--llm-url", required=True, help="the OpenAI-compatible API's base URL (ends in /v1)")
    args = parser.parse_args()
    web.run_app(make_app(args.llm_url), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
