"""``openai``: any OpenAI-compatible chat completions API (OpenAI, vLLM, Ollama, Llama Stack, Azure).

Calls ``chat/completions`` under the configured ``url`` (joined as a path: a query string such as
Azure's ``?api-version=`` is kept) with aiohttp's client, whole or streamed (server-sent
``data:`` lines up to ``data: [DONE]``), and reads the token usage when the server reports it.
Every failure becomes an :class:`~lightspeed.llm.base.LLMError` whose texts are ours (status,
provider, kind of failure; never the server's words, nor a URL's query or user info):

* the server cannot be reached, answers 5xx, or breaks off a stream: 503
  ``Unable to connect to the LLM provider``;
* no answer within ``timeout_seconds`` (the whole answer; for a stream, the connection
  and each wait for the next piece): 504;
* 429: 429 with the server's ``Retry-After``;
* 401/403 (the service's credentials are refused): 502; 404: 404 ``Model not found``;
  other 4xx: the same status;
* an answer that is not what the API promises (bad JSON, no choices): 502.

What the server said goes to the log (WARNING ``lightspeed.llm.openai``), with the API key, the
URL's secrets and anything that looks like a credential masked.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import aiofiles
import aiofiles.os
import aiohttp
import attrs
import orjson
from yarl import URL

from lightspeed.config import LLMProviderConfig
from lightspeed.llm.base import UNAVAILABLE, Completion, LLMError, LLMProvider, Message, TokenStream, Usage
from lightspeed.masking import LOG_SECRETS, Masker, public_url, url_secrets

__all__ = ["ListedModel", "OpenAIProvider", "join_url"]

log = logging.getLogger("lightspeed.llm.openai")

_KEY_RECHECK_SECONDS: Final = 1.0
_MAX_ERROR_CHARS: Final = 500
_LARGE_BODY_BYTES: Final = 512 * 1024
_MASK_WINDOW: Final = 64 * 1024
#: How the upstream recognises a provider's "prompt over the context window" refusal: by its text.
_CONTEXT_LENGTH: Final = re.compile(r"context[ _]length", re.IGNORECASE)


def join_url(base: str, *segments: str) -> URL:
    """``base`` with ``segments`` appended to its path, its query string kept.

    ``http://h/v1``, ``http://h/v1/`` -> ``http://h/v1/chat/completions``;
    ``https://h/openai/deployments/d?api-version=2024-10-21`` ->
    ``https://h/openai/deployments/d/chat/completions?api-version=2024-10-21``.
    """
    url = URL(base)
    return url.joinpath(*segments).with_query(url.query).with_fragment(None)


def _failure_kind(exc: BaseException) -> str:
    """What went wrong with the connection, in our words (the exception's text may name the URL)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "TLS handshake or certificate failure"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer broke off"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return "the proxy cannot be reached"
    return "connection failure"


class OpenAIProvider(LLMProvider):
    """One OpenAI-compatible endpoint; ``session`` gives the shared client session."""

    def __init__(self, config: LLMProviderConfig, *, session: Callable[[], aiohttp.ClientSession]) -> None:
        super().__init__(name=config.name, models=config.models)
        assert config.url is not None  # checked at config load
        self.url = join_url(config.url, "chat", "completions")
        #: The URL as errors may name it: no user info, no query string.
        self.public_url = public_url(self.url)
        self._masker = Masker([config.api_key or "", *url_secrets(config.url)])
        LOG_SECRETS.add(config.api_key, *url_secrets(config.url))
        self.models_url = join_url(config.url, "models")
        self.model_prefix = config.model_prefix
        self.config = config
        self.timeout_seconds = config.timeout_seconds
        self._session = session
        self.session_factory = session
        self._api_key = config.api_key
        self._key_path = Path(config.api_key_path) if config.api_key_path else None
        self._key_stamp: tuple[int, int] | None = None
        self._key_checked = 0.0
        self._whole_timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.timeout_seconds, sock_read=config.timeout_seconds
        )

    # ------------------------------------------------------------------ credentials

    async def _key(self) -> str | None:
        """The API key; ``api_key_path`` is re-read when the file changes (checked once a second,
        off the event loop: decision ``io-01``)."""
        if self._key_path is None:
            return self._api_key
        now = time.monotonic()
        if self._key_stamp is not None and now - self._key_checked < _KEY_RECHECK_SECONDS:
            return self._api_key
        self._key_checked = now
        try:
            st = await aiofiles.os.stat(self._key_path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._key_stamp:
                async with aiofiles.open(self._key_path, encoding="utf-8") as fh:
                    self._api_key = (await fh.read()).strip() or None
                self._key_stamp = stamp
                self._masker.add(self._api_key)
                LOG_SECRETS.add(self._api_key)
        except (OSError, UnicodeDecodeError) as exc:
            log.error("provider %r: cannot read its API key from %s: %s", self.name, self._key_path, exc)
            raise LLMError(
                503, UNAVAILABLE, f"Provider {self.name!r}: its API key cannot be read (api_key_path; see the log)"
            ) from exc
        return self._api_key

    async def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = await self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    # ------------------------------------------------------------------ errors

    def _log_upstream(self, what: str, detail: str) -> None:
        """Log what the server said or the connection did, every secret in it masked."""
        # Mask before shortening, so a secret cut in half is never half shown.
        shown = self._masker.mask(detail[:_MASK_WINDOW])[:_MAX_ERROR_CHARS]
        log.warning("provider %r (%s): %s: %s", self.name, self.public_url, what, shown)

    def _unreachable(self, exc: BaseException) -> LLMError:
        kind = _failure_kind(exc)
        self._log_upstream(kind, f"{type(exc).__name__}: {exc}")
        return LLMError(503, UNAVAILABLE, f"Provider {self.name!r} at {self.public_url}: {kind}")

    def _timed_out(self) -> LLMError:
        return LLMError(
            504,
            "The LLM provider did not answer in time",
            f"Provider {self.name!r} gave no answer within {self.timeout_seconds:g} s (timeout_seconds)",
        )

    def _bad_answer(self, what: str, detail: str) -> LLMError:
        self._log_upstream(f"an invalid answer ({what})", detail)
        return LLMError(502, "The LLM provider sent an invalid answer", f"Provider {self.name!r} sent {what}")

    def _refused(self, status: int, text: str, headers: Mapping[str, str], model: str) -> LLMError:
        self._log_upstream(f"answered {status} to model {model!r}", text.strip() or "(empty body)")
        said = f"Provider {self.name!r} answered {status}"
        if 400 <= status < 500 and _CONTEXT_LENGTH.search(text):
            # The upstream's answer to a prompt over the model's context window (its own test of the text).
            return LLMError(413, "Prompt is too long", f"The input exceeds the context window size of model '{model}'.")
        if status == 429:
            retry = headers.get("Retry-After", "")
            # Only a number of seconds or an HTTP date goes back to the client, never other text.
            ok = retry.isdigit() or bool(re.fullmatch(r"[A-Za-z]{3}, \d\d [A-Za-z]{3} \d{4} \d\d:\d\d:\d\d GMT", retry))
            response, cause = (
                ("The model quota has been exceeded", f"The token quota for model {model} has been exceeded.")
                if model
                else ("The quota has been exceeded", f"{said} (rate limited)")
            )
            return LLMError(429, response, cause, headers={"Retry-After": retry} if ok else None)
        if status in (401, 403):
            return LLMError(
                502,
                "The LLM provider refused the service's credentials",
                f"{said}: the service's credentials were refused (check api_key or api_key_path)",
            )
        if status == 404:
            return LLMError(404, "Model not found", f"Model with ID {model} does not exist")
        if 400 <= status < 500:
            return LLMError(status, "The LLM provider rejected the request", f"{said}: the request was rejected")
        return LLMError(503, UNAVAILABLE, f"{said}: a server error")

    # ------------------------------------------------------------------ calls

    def _body(self, model: str, messages: Sequence[Message], *, stream: bool) -> bytes | io.BytesIO:
        body: dict[str, Any] = {
            "model": self.model_prefix + model,
            "messages": [m.to_dict() for m in messages],
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        data = orjson.dumps(body)
        # aiohttp warns about (and writes in one piece) raw bodies over 1 MiB; a file object is streamed.
        return io.BytesIO(data) if len(data) > _LARGE_BODY_BYTES else data

    async def complete(self, *, model: str, messages: Sequence[Message]) -> Completion:
        data = self._body(model, messages, stream=False)
        try:
            async with self._session().post(
                self.url, data=data, headers=await self._headers(), timeout=self._whole_timeout
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self._refused(resp.status, raw.decode("utf-8", "replace"), resp.headers, model)
        except TimeoutError:
            raise self._timed_out() from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from exc
        try:
            answer = orjson.loads(raw)
            text = answer["choices"][0]["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            detail = f"{exc!r}: {raw[:_MASK_WINDOW].decode('utf-8', 'replace')}"
            raise self._bad_answer("an answer that is not a chat completion", detail) from None
        return Completion(text=text, usage=_usage(answer.get("usage")))

    async def stream(self, *, model: str, messages: Sequence[Message]) -> TokenStream:
        data = self._body(model, messages, stream=True)
        try:
            resp = await self._session().post(
                self.url, data=data, headers=await self._headers(), timeout=self._stream_timeout
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
        """The answer's tokens, a list per network read: tokens that arrived together go on
        together; an empty list before each wait for more."""
        done = False
        rest = b""
        try:
            while not done:
                data = resp.content.read_nowait()  # what has arrived already
                if not data and not resp.content.at_eof():
                    yield []
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
            log.warning("provider %r (%s): the stream ended before [DONE]", self.name, self.public_url)
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
            chunk = orjson.loads(payload)
        except ValueError:
            raise self._bad_answer("a stream chunk that is not JSON", _text(payload)) from None
        if not isinstance(chunk, dict):
            raise self._bad_answer("a stream chunk that is not an object", _text(payload))
        if "error" in chunk:
            self._log_upstream("an error mid-answer", _text(payload))
            raise LLMError(503, UNAVAILABLE, f"Provider {self.name!r} reported an error mid-answer")
        if chunk.get("usage"):
            got = _usage(chunk["usage"])
            usage.input_tokens, usage.output_tokens = got.input_tokens, got.output_tokens
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if content:
                if not isinstance(content, str):
                    raise self._bad_answer("a stream chunk whose content is not a string", _text(payload))
                out.append(content)
        return False

    async def list_models(self) -> list[ListedModel]:
        """The language models the server lists at ``GET {url}/models``; raises :class:`LLMError`.

        Reads the OpenAI list (``{"data": [{"id"}]}``) and Llama Stack's richer items
        (``identifier``, ``provider_id``, ``provider_resource_id``, ``model_type``); models
        whose type is not ``llm`` (embedding models) are left out.
        """
        try:
            async with self._session().get(
                self.models_url, headers=await self._headers(), timeout=self._whole_timeout
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self._refused(resp.status, raw.decode("utf-8", "replace"), resp.headers, "")
        except TimeoutError:
            raise self._timed_out() from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from exc
        try:
            items = orjson.loads(raw)["data"]
            if not isinstance(items, list):
                raise TypeError("data is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            detail = f"{exc!r}: {raw[:_MASK_WINDOW].decode('utf-8', 'replace')}"
            raise self._bad_answer("an answer that is not a model list", detail) from None
        return [m for m in (_listed_model(item) for item in items) if m is not None]


@attrs.frozen(kw_only=True)
class ListedModel:
    """One model a provider lists: ``provider/model`` split as a Llama Stack names them."""

    provider: str | None
    model: str
    model_type: str


def _listed_model(item: Any) -> ListedModel | None:
    if not isinstance(item, dict):
        return None
    custom = item.get("custom_metadata")
    meta: dict[str, Any] = custom if isinstance(custom, dict) else {}
    ident = item.get("identifier") or item.get("id")
    model_type = item.get("model_type") or meta.get("model_type") or "llm"
    if not isinstance(ident, str) or not ident or model_type != "llm":
        return None
    provider = item.get("provider_id") or meta.get("provider_id")
    if isinstance(provider, str) and provider and ident.startswith(provider + "/"):
        return ListedModel(provider=provider, model=ident[len(provider) + 1 :], model_type="llm")
    head, sep, tail = ident.partition("/")
    if sep and head and tail:
        return ListedModel(provider=head, model=tail, model_type="llm")
    return ListedModel(provider=None, model=ident, model_type="llm")


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    inp, out = data.get("prompt_tokens"), data.get("completion_tokens")
    return Usage(
        input_tokens=inp if isinstance(inp, int) else 0,
        output_tokens=out if isinstance(out, int) else 0,
    )


def _text(payload: bytes) -> str:
    return payload[:_MASK_WINDOW].decode("utf-8", "replace")
