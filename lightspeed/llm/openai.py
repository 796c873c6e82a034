"""``openai``: any OpenAI-compatible chat completions API (OpenAI, vLLM, Ollama, Llama Stack).

Calls ``{url}/chat/completions`` with aiohttp's client, whole or streamed (server-sent
``data:`` lines up to ``data: [DONE]``), and reads the token usage when the server
reports it. Every failure becomes an :class:`~lightspeed.llm.base.LLMError`:

* the server cannot be reached, answers 5xx, or breaks off a stream: 503
  ``Unable to connect to the LLM provider``;
* no answer within ``timeout_seconds`` (the whole answer; for a stream, the connection
  and each wait for the next piece): 504;
* 429: 429 with the server's message and its ``Retry-After``;
* 401/403 (the service's credentials are refused): 502; 404: 404 ``Model not found``;
  other 4xx: the same status with the server's message;
* an answer that is not what the API promises (bad JSON, no choices): 502.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp

from lightspeed.config import LLMProviderConfig
from lightspeed.llm.base import UNAVAILABLE, Completion, LLMError, LLMProvider, Message, TokenStream, Usage

__all__ = ["OpenAIProvider"]

log = logging.getLogger("lightspeed.llm.openai")

_KEY_RECHECK_SECONDS: Final = 1.0
_MAX_ERROR_CHARS: Final = 500
_LARGE_BODY_BYTES: Final = 512 * 1024


class OpenAIProvider(LLMProvider):
    """One OpenAI-compatible endpoint; ``session`` gives the shared client session."""

    def __init__(self, config: LLMProviderConfig, *, session: Callable[[], aiohttp.ClientSession]) -> None:
        super().__init__(name=config.name, models=config.models)
        assert config.url is not None  # checked at config load
        self.url = config.url.rstrip("/") + "/chat/completions"
        self.timeout_seconds = config.timeout_seconds
        self._session = session
        self._api_key = config.api_key
        self._key_path = Path(config.api_key_path) if config.api_key_path else None
        self._key_stamp: tuple[int, int] | None = None
        self._key_checked = 0.0
        self._whole_timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.timeout_seconds, sock_read=config.timeout_seconds
        )

    # ------------------------------------------------------------------ credentials

    def _key(self) -> str | None:
        """The API key; ``api_key_path`` is re-read when the file changes (checked once a second)."""
        if self._key_path is None:
            return self._api_key
        now = time.monotonic()
        if self._key_stamp is not None and now - self._key_checked < _KEY_RECHECK_SECONDS:
            return self._api_key
        self._key_checked = now
        try:
            st = os.stat(self._key_path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._key_stamp:
                self._api_key = self._key_path.read_text(encoding="utf-8").strip() or None
                self._key_stamp = stamp
        except OSError as exc:
            raise LLMError(
                503, UNAVAILABLE, f"Cannot read the API key of provider {self.name!r} from {self._key_path}: {exc}"
            ) from exc
        return self._api_key

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    # ------------------------------------------------------------------ errors

    def _unreachable(self, exc: BaseException) -> LLMError:
        what = str(exc) or type(exc).__name__
        return LLMError(503, UNAVAILABLE, f"Provider {self.name!r} at {self.url}: {what}")

    def _timed_out(self) -> LLMError:
        return LLMError(
            504,
            "The LLM provider did not answer in time",
            f"Provider {self.name!r} gave no answer within {self.timeout_seconds:g} s (timeout_seconds)",
        )

    def _bad_answer(self, what: str) -> LLMError:
        return LLMError(502, "The LLM provider sent an invalid answer", f"Provider {self.name!r}: {what}")

    def _refused(self, status: int, text: str, headers: Mapping[str, str], model: str) -> LLMError:
        message = _error_message(text)
        said = f"Provider {self.name!r} answered {status}: {message}"
        if status == 429:
            retry = {"Retry-After": headers["Retry-After"]} if "Retry-After" in headers else None
            return LLMError(429, "The LLM provider is rate limiting requests", said, headers=retry)
        if status in (401, 403):
            return LLMError(502, "The LLM provider refused the service's credentials", said)
        if status == 404:
            return LLMError(404, "Model not found", f"Model {model!r} is unknown to provider {self.name!r}: {message}")
        if 400 <= status < 500:
            return LLMError(status, "The LLM provider rejected the request", said)
        return LLMError(503, UNAVAILABLE, said)

    # ------------------------------------------------------------------ calls

    def _body(self, model: str, messages: Sequence[Message], *, stream: bool) -> bytes | io.BytesIO:
        body: dict[str, Any] = {"model": model, "messages": [m.to_dict() for m in messages], "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        # aiohttp warns about (and writes in one piece) raw bodies over 1 MiB; a file object is streamed.
        return io.BytesIO(data) if len(data) > _LARGE_BODY_BYTES else data

    async def complete(self, *, model: str, messages: Sequence[Message]) -> Completion:
        data = self._body(model, messages, stream=False)
        try:
            async with self._session().post(
                self.url, data=data, headers=self._headers(), timeout=self._whole_timeout
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self._refused(resp.status, raw.decode("utf-8", "replace"), resp.headers, model)
        except TimeoutError:
            raise self._timed_out() from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from exc
        try:
            answer = json.loads(raw)
            text = answer["choices"][0]["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise self._bad_answer(f"not a chat completion ({exc!r}): {raw[:200]!r}") from None
        return Completion(text=text, usage=_usage(answer.get("usage")))

    async def stream(self, *, model: str, messages: Sequence[Message]) -> TokenStream:
        data = self._body(model, messages, stream=True)
        try:
            resp = await self._session().post(
                self.url, data=data, headers=self._headers(), timeout=self._stream_timeout
            )
        except TimeoutError:
            raise self._timed_out() from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from exc
        if resp.status >= 400:
            try:
                text = (await resp.read()).decode("utf-8", "replace")
            except (TimeoutError, aiohttp.ClientError):
                text = ""
            finally:
                resp.release()
            raise self._refused(resp.status, text, resp.headers, model)
        usage = Usage()
        return TokenStream(tokens=self._tokens(resp, usage), usage=usage)

    async def _tokens(self, resp: aiohttp.ClientResponse, usage: Usage) -> AsyncGenerator[list[str], None]:
        """The answer's tokens, a list per network read: tokens that arrived together go on together."""
        done = False
        rest = b""
        try:
            while not done:
                data = await resp.content.readany()
                lines = (rest + data).split(b"\n")
                rest = lines.pop() if data else b""  # at the end, the last line needs no newline
                batch: list[str] = []
                try:
                    for line in lines:
                        if self._parse_line(line, usage, batch):
                            done = True
                            break
                except LLMError:
                    if batch:
                        yield batch  # what came before the bad piece still counts
                    raise
                if batch:
                    yield batch
                if not data:
                    break
        except TimeoutError:
            raise self._timed_out() from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from exc
        finally:
            if done:
                resp.release()
            else:
                resp.close()  # the rest of the answer is not wanted: the connection cannot be reused
        if not done:
            raise LLMError(503, UNAVAILABLE, f"Provider {self.name!r} ended the stream before the answer was complete")

    def _parse_line(self, raw: bytes, usage: Usage, out: list[str]) -> bool:
        """Add one SSE line's text to ``out`` and its usage to ``usage``; true at ``data: [DONE]``."""
        line = raw.strip()
        if not line.startswith(b"data:"):
            return False  # blank separators, comments, event: / id: lines
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return True
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise self._bad_answer(f"a stream chunk is not JSON: {payload[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise self._bad_answer(f"a stream chunk is not an object: {payload[:200]!r}")
        if "error" in chunk:
            raise LLMError(503, UNAVAILABLE, f"Provider {self.name!r} failed mid-answer: {chunk['error']}")
        if chunk.get("usage"):
            got = _usage(chunk["usage"])
            usage.input_tokens, usage.output_tokens = got.input_tokens, got.output_tokens
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if content:
                if not isinstance(content, str):
                    raise self._bad_answer(f"a stream chunk's content is not a string: {payload[:200]!r}")
                out.append(content)
        return False


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    inp, out = data.get("prompt_tokens"), data.get("completion_tokens")
    return Usage(
        input_tokens=inp if isinstance(inp, int) else 0,
        output_tokens=out if isinstance(out, int) else 0,
    )


def _error_message(text: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body itself (shortened)."""
    try:
        data = json.loads(text)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:_MAX_ERROR_CHARS]
        if isinstance(err, str):
            return err[:_MAX_ERROR_CHARS]
    except ValueError:
        pass
    return text.strip()[:_MAX_ERROR_CHARS] or "(empty body)"
