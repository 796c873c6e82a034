"""``POST /v1/query`` and ``/v1/streaming_query``, wire-compatible with the Lightspeed Core Stack.

One interaction, in order: authenticate; read and validate the body (422 in pydantic's
shape, 413 when too large); redact the query and attachments with ``query_filters``;
choose the provider and model (404 ``Model not found``); find or start the conversation
(404/403, or a new UUID4 owned by the caller); build the prompt from the system prompt,
the conversation's last ``inference.max_history_turns`` turns and the redacted query
with its attachments; ask the LLM; store the turn in the conversation's history and, when
``transcripts_enabled``, a transcript. Nothing unredacted reaches the LLM or the store.
The conversation's owner is recorded while the LLM thinks, before the answer is
returned; the turn and the transcript are stored just after, by a :class:`RecordWriter`
that the next query of the conversation and the shutdown wait for. A failure to store
is logged and counted in :data:`QUERY_STATS` and never takes the answer away from the user.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, Final

import attrs
from aiohttp import web

from lightspeed.api.common import authenticate, check_conversation_access
from lightspeed.api.errors import REQUEST_ID, ApiError, json_response
from lightspeed.api.validation import BodyChecker, read_json_body
from lightspeed.auth import AuthResult
from lightspeed.llm import LLMError, LLMProvider, Message, Usage
from lightspeed.records import ConversationTurn, Transcript, TranscriptMetadata, canonical_conversation_id, hash_user_id
from lightspeed.redaction import Redactor
from lightspeed.state import CONFIG, METRICS, STORAGE, config_from, llm_from

__all__ = [
    "ATTACHMENT_CONTENT_TYPES",
    "ATTACHMENT_TYPES",
    "Attachment",
    "DEFAULT_SYSTEM_PROMPT",
    "QUERY_STATS",
    "RECORDS",
    "QueryRequest",
    "QueryStats",
    "RecordWriter",
    "add_routes",
    "parse_query_request",
    "records_ctx",
]

log = logging.getLogger("lightspeed.api.query")

#: The upstream's attachment types and content types.
ATTACHMENT_TYPES: Final = ("alert", "api object", "configuration", "error message", "event", "log", "stack trace")
ATTACHMENT_CONTENT_TYPES: Final = ("text/plain", "application/json", "application/yaml", "application/xml")
MEDIA_TYPE_JSON: Final = "application/json"
MEDIA_TYPE_TEXT: Final = "text/plain"
DEFAULT_SYSTEM_PROMPT: Final = "You are a helpful assistant"
UNABLE_TO_PROCESS: Final = "Unable to process this request"

_QUERY_FIELDS: Final = (
    "query",
    "conversation_id",
    "provider",
    "model",
    "system_prompt",
    "attachments",
    "no_tools",
    "generate_topic_summary",
    "media_type",
    "solr",
    "vector_store_ids",
    "shield_ids",
)
_ATTACHMENT_FIELDS: Final = ("attachment_type", "content_type", "content")


# --------------------------------------------------------------------------- request model


@attrs.frozen(kw_only=True)
class Attachment:
    """One attachment of a query: a log, a configuration, an error message..."""

    attachment_type: str
    content_type: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"attachment_type": self.attachment_type, "content_type": self.content_type, "content": self.content}


@attrs.frozen(kw_only=True)
class QueryRequest:
    """The fields of a query body that change what we do (the upstream's others are accepted and ignored)."""

    query: str
    conversation_id: str | None = None
    provider: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    attachments: tuple[Attachment, ...] = ()
    media_type: str | None = None


def parse_query_request(body: Any) -> QueryRequest:
    """Validate a query body as the upstream's pydantic model does; raises ``ValidationFailed``."""
    c = BodyChecker(body, allowed=_QUERY_FIELDS)
    query = c.string("query", required=True, min_length=1)
    if query is not None and not query.strip():
        c.value_error(["query"], "Query must not be blank", query)
    conversation_id = c.string("conversation_id") or None
    if conversation_id is not None:
        canonical = canonical_conversation_id(conversation_id)
        if canonical is None:
            c.value_error(["conversation_id"], f"Improper conversation ID '{conversation_id}'", conversation_id)
        conversation_id = canonical
    provider = c.string("provider")
    model = c.string("model")
    system_prompt = c.string("system_prompt")
    media_type = c.string("media_type")
    c.boolean("no_tools")
    c.boolean("generate_topic_summary")
    c.string_list("vector_store_ids")
    c.string_list("shield_ids")
    solr = c.body.get("solr")
    if solr is not None and not isinstance(solr, dict):
        c.add("dict_type", ["solr"], "Input should be a valid dictionary", solr)
    attachments = _attachments(c)
    if not c.errors:
        # The upstream's model validators run only when every field is valid.
        if model and not provider:
            c.value_error([], "Provider must be specified if model is specified", body)
        elif provider and not model:
            c.value_error([], "Model must be specified if provider is specified", body)
        if media_type and media_type not in (MEDIA_TYPE_JSON, MEDIA_TYPE_TEXT):
            c.value_error([], f"media_type must be either '{MEDIA_TYPE_JSON}' or '{MEDIA_TYPE_TEXT}'", body)
    c.raise_if_errors()
    assert query is not None
    return QueryRequest(
        query=query,
        conversation_id=conversation_id,
        provider=provider or None,
        model=model or None,
        system_prompt=system_prompt,
        attachments=attachments,
        media_type=media_type,
    )


def _attachments(c: BodyChecker) -> tuple[Attachment, ...]:
    value = c.body.get("attachments")
    if value is None:
        return ()
    if not isinstance(value, list):
        c.add("list_type", ["attachments"], "Input should be a valid list", value)
        return ()
    out: list[Attachment] = []
    for i, item in enumerate(value):
        loc: list[str | int] = ["attachments", i]
        if not isinstance(item, dict):
            c.add("model_type", loc, "Input should be a valid dictionary or instance of Attachment", item)
            continue
        fields: dict[str, str] = {}
        for key, val in item.items():
            if key not in _ATTACHMENT_FIELDS:
                c.add("extra_forbidden", [*loc, key], "Extra inputs are not permitted", val)
        for key in _ATTACHMENT_FIELDS:
            if key not in item:
                c.add("missing", [*loc, key], "Field required", item)
            elif not isinstance(item[key], str):
                c.add("string_type", [*loc, key], "Input should be a valid string", item[key])
            else:
                fields[key] = item[key]
        if len(fields) == len(_ATTACHMENT_FIELDS):
            out.append(Attachment(**fields))
    return tuple(out)


def check_attachments(attachments: Sequence[Attachment]) -> None:
    """The upstream's metadata check: a 422 ``Unable to process this request`` naming the bad value."""
    for att in attachments:
        if att.attachment_type not in ATTACHMENT_TYPES:
            raise ApiError(422, UNABLE_TO_PROCESS, f"Attachment with improper type {att.attachment_type} detected")
        if att.content_type not in ATTACHMENT_CONTENT_TYPES:
            raise ApiError(422, UNABLE_TO_PROCESS, f"Attachment with improper content type {att.content_type} detected")


# --------------------------------------------------------------------------- the interaction


@attrs.define(kw_only=True)
class QueryStats:
    """Counters of what the query endpoints stored, and failed to store."""

    transcripts_stored: int = 0
    transcript_failures: int = 0
    history_failures: int = 0


QUERY_STATS: Final = web.AppKey("lightspeed.query_stats", QueryStats)
REDACTOR: Final = web.AppKey("lightspeed.redactor", Redactor)


@attrs.frozen(kw_only=True)
class Interaction:
    """A validated, redacted query with its provider, model, conversation and prompt."""

    user: AuthResult
    request: QueryRequest
    redacted_query: str
    attachments: tuple[Attachment, ...]
    conversation_id: str
    provider: LLMProvider
    model: str
    messages: tuple[Message, ...]
    history_truncated: bool
    #: Recording the owner of a new conversation, done while the LLM thinks.
    owner_recorded: asyncio.Task[None] | None = None


def prompt_text(query: str, attachments: Sequence[Attachment]) -> str:
    """The user message: the (redacted) query, then each attachment under a header line."""
    parts = [query]
    for i, att in enumerate(attachments, 1):
        parts.append(f"[Attachment {i}: {att.attachment_type}, {att.content_type}]\n{att.content}")
    return "\n\n".join(parts)


async def begin(request: web.Request) -> Interaction:
    """Everything before the LLM is asked; raises the 4xx/5xx errors a query can meet first."""
    user = await authenticate(request)
    config = config_from(request)
    body = await read_json_body(request, limit=config.service.max_request_body_bytes)
    q = parse_query_request(body)
    check_attachments(q.attachments)
    redactor = request.app[REDACTOR]
    redacted_query = redactor.redact(q.query)
    attachments = tuple(attrs.evolve(a, content=redactor.redact(a.content)) for a in q.attachments)
    provider, model = llm_from(request).resolve(q.provider, q.model)

    storage = request.app[STORAGE]
    max_turns = config.inference.max_history_turns
    history: list[ConversationTurn] = []
    owner_recorded = None
    if q.conversation_id is not None:
        conversation_id = q.conversation_id
        await check_conversation_access(request, conversation_id, user, action="query")
        await request.app[RECORDS].settled(conversation_id)
        if max_turns > 0:
            try:
                history = await storage.get_turns(conversation_id, limit=max_turns + 1)
            except Exception as exc:  # noqa: BLE001 - history is a help, not a precondition
                log.error("cannot read the history of conversation %s: %s", conversation_id, exc)
                request.app[QUERY_STATS].history_failures += 1
        else:
            history = await _has_history(request, conversation_id)
    else:
        conversation_id = str(uuid.uuid4())
        owner = hash_user_id(user.user_id)
        owner_recorded = request.app[RECORDS].spawn(_record_owner(request.app, conversation_id, owner))
    truncated = len(history) > max_turns
    kept = history[len(history) - max_turns :] if max_turns > 0 else []

    system = redactor.redact(q.system_prompt) if q.system_prompt else DEFAULT_SYSTEM_PROMPT
    messages = [Message(role="system", content=system)]
    for turn in kept:
        messages.append(Message(role="user", content=turn.query))
        messages.append(Message(role="assistant", content=turn.response))
    messages.append(Message(role="user", content=prompt_text(redacted_query, attachments)))
    return Interaction(
        user=user,
        request=q,
        redacted_query=redacted_query,
        attachments=attachments,
        conversation_id=conversation_id,
        provider=provider,
        model=model,
        messages=tuple(messages),
        history_truncated=truncated,
        owner_recorded=owner_recorded,
    )


async def _record_owner(app: web.Application, conversation_id: str, owner: str) -> None:
    try:
        await app[STORAGE].set_conversation_owner(conversation_id, owner=owner)
    except Exception as exc:  # noqa: BLE001 - the answer still goes to the user
        log.error("cannot record the owner of new conversation %s: %s", conversation_id, exc)
        app[QUERY_STATS].history_failures += 1


async def _has_history(request: web.Request, conversation_id: str) -> list[ConversationTurn]:
    """With ``max_history_turns: 0`` no turn is sent; one is read to tell whether any was left out."""
    try:
        return await request.app[STORAGE].get_turns(conversation_id, limit=1)
    except Exception:  # noqa: BLE001
        return []


class RecordWriter:
    """Stores each answer's history turn and transcript after the answer has gone out,
    so the disk is never on the user's path.

    Turns of one conversation are stored in order, and :meth:`settled` lets the next query
    of a conversation wait for the previous turn before it reads the history. At most
    ``max_pending`` stores run at once; beyond that the caller waits for its own
    (backpressure, so memory stays bounded when the store is slower than the queries).
    :meth:`drain` waits for every pending store; :func:`records_ctx` calls it at shutdown,
    before the storage backend closes, so a clean shutdown loses nothing.
    """

    def __init__(self, app: web.Application, *, max_pending: int = 256) -> None:
        self.app = app
        self.max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()
        self._last_turn: dict[str, asyncio.Task[None]] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` (which must not raise) as a task that :meth:`drain` waits for."""
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def submit(self, conversation_id: str, turn: ConversationTurn, transcript: Transcript | None) -> None:
        previous = self._last_turn.get(conversation_id)
        task = asyncio.ensure_future(self._store(conversation_id, turn, transcript, previous))
        self._pending.add(task)
        self._last_turn[conversation_id] = task

        def done(t: asyncio.Task[None]) -> None:
            self._pending.discard(t)
            if self._last_turn.get(conversation_id) is t:
                del self._last_turn[conversation_id]

        task.add_done_callback(done)
        if len(self._pending) > self.max_pending:
            await asyncio.shield(task)

    async def settled(self, conversation_id: str) -> None:
        """Wait until the turns of ``conversation_id`` given so far are stored."""
        task = self._last_turn.get(conversation_id)
        if task is not None:
            await asyncio.shield(task)

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*self._pending)

    async def _store(
        self,
        conversation_id: str,
        turn: ConversationTurn,
        transcript: Transcript | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await previous  # never raises: failures are logged below
        if transcript is None:
            await self._put_turn(conversation_id, turn)
        else:
            await asyncio.gather(self._put_turn(conversation_id, turn), self._put_transcript(transcript))

    async def _put_turn(self, conversation_id: str, turn: ConversationTurn) -> None:
        try:
            await self.app[STORAGE].append_turn(conversation_id, turn)
        except Exception as exc:  # noqa: BLE001 - logged and counted; the answer stands
            self.app[QUERY_STATS].history_failures += 1
            log.error("cannot store a turn of conversation %s: %s", conversation_id, exc)

    async def _put_transcript(self, transcript: Transcript) -> None:
        stats = self.app[QUERY_STATS]
        try:
            await self.app[STORAGE].put_transcript(transcript)
        except Exception as exc:  # noqa: BLE001 - logged and counted; the answer stands
            stats.transcript_failures += 1
            log.error(
                "cannot store the transcript %s of conversation %s: %s",
                transcript.record_id,
                transcript.conversation_id,
                exc,
            )
        else:
            stats.transcripts_stored += 1


RECORDS: Final = web.AppKey("lightspeed.query_records", RecordWriter)


async def records_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: at shutdown, wait for the turns and transcripts still being stored."""
    yield
    writer = app[RECORDS]
    if writer.pending:
        log.info("storing %d pending answer(s) before shutdown", writer.pending)
    await writer.drain()


async def record(app: web.Application, it: Interaction, answer: str, *, cut_short: bool) -> None:
    """Make sure the conversation's owner is stored, then hand the turn and (when enabled)
    the transcript to the :class:`RecordWriter`. Failures are logged and counted, never raised."""
    if it.owner_recorded is not None:
        await it.owner_recorded  # feedback on the answer finds its conversation
    turn = ConversationTurn(
        query=it.redacted_query, response=answer, provider=it.provider.name, model=it.model, truncated=cut_short
    )
    transcript = None
    if app[CONFIG].user_data_collection.transcripts_enabled:
        transcript = Transcript(
            metadata=TranscriptMetadata(
                provider=it.provider.name,
                model=it.model,
                query_provider=it.request.provider,
                query_model=it.request.model,
                user_id=hash_user_id(it.user.user_id),
                conversation_id=it.conversation_id,
            ),
            redacted_query=it.redacted_query,
            query_is_valid=True,
            llm_response=answer,
            truncated=it.history_truncated or cut_short,
            attachments=tuple(a.to_dict() for a in it.attachments),
        )
    await app[RECORDS].submit(it.conversation_id, turn, transcript)


# --------------------------------------------------------------------------- handlers


async def query(request: web.Request) -> web.Response:
    it = await begin(request)
    completion = await it.provider.complete(model=it.model, messages=it.messages)
    await record(request.app, it, completion.text, cut_short=False)
    return json_response(
        {
            "conversation_id": it.conversation_id,
            "response": completion.text,
            "rag_chunks": [],
            "referenced_documents": [],
            "truncated": it.history_truncated,
            "input_tokens": completion.usage.input_tokens,
            "output_tokens": completion.usage.output_tokens,
            "available_quotas": {},
            "tool_calls": [],
            "tool_results": [],
        }
    )


def _frame(event: str, data: dict[str, Any], **extra: Any) -> bytes:
    return b"data: " + json.dumps({"event": event, "data": data, **extra}, ensure_ascii=False).encode() + b"\n\n"


class _Sink:
    """Writes the stream's events as SSE frames, or as raw text for ``media_type: text/plain``."""

    def __init__(self, response: web.StreamResponse, *, text: bool) -> None:
        self.response = response
        self.text = text

    async def start(self, conversation_id: str, request_id: str) -> None:
        if not self.text:
            await self.response.write(_frame("start", {"conversation_id": conversation_id, "request_id": request_id}))

    async def tokens(self, first: int, tokens: Sequence[str]) -> None:
        """Tokens that arrived together, numbered from ``first``, in one write."""
        if self.text:
            await self.response.write("".join(tokens).encode())
        else:
            frames = (_frame("token", {"id": first + i, "token": t}) for i, t in enumerate(tokens))
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
            _frame("turn_complete", {"id": index, "token": answer}) + _frame("end", end, available_quotas={})
        )

    async def error(self, exc: LLMError) -> None:
        if self.text:
            await self.response.write(f"\n\n{exc.response}: {exc.cause}\n".encode())
        else:
            data = {"status_code": exc.status, "response": exc.response, "cause": exc.cause}
            await self.response.write(_frame("error", data))


async def _record_shielded(app: web.Application, it: Interaction, partial: str) -> None:
    """Store a cut-short answer; shielded, so a cancelled handler (server shutdown) still stores it."""
    await asyncio.shield(app[RECORDS].spawn(record(app, it, partial, cut_short=True)))


async def streaming_query(request: web.Request) -> web.StreamResponse:
    it = await begin(request)
    stream = await it.provider.stream(model=it.model, messages=it.messages)  # refusals are plain JSON errors
    text = it.request.media_type == MEDIA_TYPE_TEXT
    rid = request.get(REQUEST_ID, "")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/plain; charset=utf-8" if text else "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Request-ID": rid,
        }
    )
    parts: list[str] = []
    recorded = False
    sink = _Sink(response, text=text)
    try:
        await response.prepare(request)
        await sink.start(it.conversation_id, rid)
        async for batch in stream.tokens:
            await sink.tokens(len(parts), batch)
            parts.extend(batch)
        answer = "".join(parts)
        recorded = True
        await record(request.app, it, answer, cut_short=False)
        await sink.complete(len(parts), answer, truncated=it.history_truncated, usage=stream.usage)
    except LLMError as exc:
        log.warning("streaming query %s: the LLM failed after %d tokens: %s", rid, len(parts), exc)
        recorded = True
        await _record_shielded(request.app, it, "".join(parts))  # handed over before the client hears the end
        try:
            await sink.error(exc)
            await response.write_eof()
        except ConnectionResetError:
            pass
    except ConnectionResetError:
        log.info("streaming query %s: the client went away after %d tokens", rid, len(parts))
    finally:
        await stream.aclose()
        if not recorded:
            await _record_shielded(request.app, it, "".join(parts))
    return response


def add_routes(app: web.Application, prefixes: tuple[str, ...]) -> None:
    """The query routes under each prefix, the state they use, and :func:`records_ctx`.

    Call after the storage backend's cleanup context is appended: contexts are torn down
    in reverse, so pending transcripts are stored before the backend closes.
    """
    app[QUERY_STATS] = stats = QueryStats()
    app[METRICS].expose_counters(
        stats,
        {
            "lightspeed_transcripts_stored": ("transcripts_stored", "Transcripts stored by the query endpoints"),
            "lightspeed_transcript_store_failures": (
                "transcript_failures",
                "Transcripts that could not be stored (the user still got the answer)",
            ),
            "lightspeed_history_failures": (
                "history_failures",
                "Conversation owners or history turns that could not be stored or read",
            ),
        },
    )
    app[RECORDS] = RecordWriter(app)
    app.cleanup_ctx.append(records_ctx)
    app[REDACTOR] = Redactor(app[CONFIG].query_filters)
    for prefix in prefixes:
        app.router.add_post(f"{prefix}/query", query)
        app.router.add_post(f"{prefix}/streaming_query", streaming_query)
