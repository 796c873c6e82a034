"""The handlers of ``POST /v1/query`` and ``/v1/streaming_query``.

One interaction, in order: authenticate; read and validate the body (422 in pydantic's
shape, 413 when too large); redact the query and attachments with ``query_filters``;
choose the provider and model (404 ``Model not found``); find or start the conversation
(404/403, or a new UUID4 owned by the caller); build the prompt from the system prompt,
the conversation's last ``inference.max_history_turns`` turns and the redacted query
with its attachments; ask the LLM; store the turn in the conversation's history and, when
``transcripts_enabled``, a transcript. Nothing unredacted reaches the LLM or the store.
The conversation's owner is recorded while the LLM thinks; the answer goes out only
after the owner, the turn and the transcript are stored
(:mod:`~lightspeed.api.query.recording`), and is a 500 when they could not be. An abandoned
or failed stream still stores what it got, marked truncated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import attrs
from aiohttp import web

from lightspeed.actions import Action
from lightspeed.api.access import require_model_override
from lightspeed.api.common import authenticate, check_conversation_access
from lightspeed.api.errors import json_response
from lightspeed.api.interrupt import interrupted_suffix
from lightspeed.api.openapi import Response, operation
from lightspeed.api.query.recording import HISTORY_NOT_STORED, RecordsNotStored, store_answer
from lightspeed.api.query.request import (
    DEFAULT_SYSTEM_PROMPT,
    MEDIA_TYPE_TEXT,
    Attachment,
    QueryRequest,
    check_attachments,
    parse_query_request,
    prompt_images,
    prompt_text,
)
from lightspeed.api.query.sse import EventSink, EventStreamResponse
from lightspeed.api.validation import read_json_body
from lightspeed.auth import AuthResult
from lightspeed.auth.routes import requires
from lightspeed.llm import LLMError, LLMProvider, Message, Usage
from lightspeed.records import (
    ConversationTurn,
    Transcript,
    TranscriptMetadata,
    hash_user_id,
    new_record_id,
    utc_timestamp,
)
from lightspeed.state import (
    config_from,
    llm_from,
    metrics_from,
    pending_stores_from,
    redactor_from,
    request_id_from,
    storage_from,
    streams_from,
)

__all__ = ["add_routes", "query", "streaming_query"]

log = logging.getLogger("lightspeed.api.query")


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
    #: The owner of a new conversation, recorded with its first turn.
    new_owner: str | None = None
    #: When the query was ready for the LLM (the turn's ``started_at``).
    started_at: str = attrs.field(factory=utc_timestamp)


async def begin(request: web.Request) -> Interaction:
    """Everything before the LLM is asked; raises the 4xx/5xx errors a query can meet first."""
    user = await authenticate(request)
    config = config_from(request)
    body = await read_json_body(request, limit=config.service.max_request_body_bytes)
    q = parse_query_request(body, max_image_bytes=config.service.max_image_attachment_bytes)
    require_model_override(request, provider=q.provider, model=q.model)
    check_attachments(q.attachments)
    redactor = redactor_from(request)
    redacted_query = redactor.redact(q.query)
    # Filters are for text: an image's base64 is left whole (a replacement would corrupt it).
    attachments = tuple(a if a.is_image else attrs.evolve(a, content=redactor.redact(a.content)) for a in q.attachments)
    provider, model = await llm_from(request).resolve_or_discover(q.provider, q.model)

    storage = storage_from(request)
    max_turns = config.inference.max_history_turns
    history: list[ConversationTurn] = []
    new_owner = None
    if q.conversation_id is not None:
        conversation_id = q.conversation_id
        # The history (at most one turn more than is sent, to tell whether any was left out)
        # is read while the access check runs, so an owner not in the store's memory costs one
        # wait, not two; it is used only once the check has passed. One task, not gather's two
        # (decision query-03).
        reading = asyncio.ensure_future(storage.get_turns(conversation_id, limit=max_turns + 1))
        try:
            await check_conversation_access(
                request, conversation_id, user, action="query", others_action=Action.QUERY_OTHERS_CONVERSATIONS
            )
        except BaseException:
            reading.cancel()
            reading.add_done_callback(_consume)
            raise
        try:
            turns = await reading
        except Exception as exc:
            log.error("cannot read the history of conversation %s: %s", conversation_id, exc)
            metrics_from(request).queries.history_failures += 1
            raise RecordsNotStored(HISTORY_NOT_STORED) from exc
        history = turns
    else:
        conversation_id = new_record_id()
        new_owner = hash_user_id(user.user_id)
    truncated = len(history) > max_turns
    kept = history[len(history) - max_turns :] if max_turns > 0 else []

    system = redactor.redact(q.system_prompt) if q.system_prompt else DEFAULT_SYSTEM_PROMPT
    messages = [Message(role="system", content=system)]
    for turn in kept:
        messages.append(Message(role="user", content=turn.query))
        messages.append(Message(role="assistant", content=turn.response))
    messages.append(
        Message(role="user", content=prompt_text(redacted_query, attachments), images=prompt_images(attachments))
    )
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
        new_owner=new_owner,
    )


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a dropped read's outcome, so that its failure is not logged as never retrieved."""
    if not task.cancelled():
        task.exception()


async def record(request: web.Request, it: Interaction, answer: str, *, cut_short: bool) -> None:
    """Store the conversation's owner (when new), the turn and (when enabled) the transcript,
    and return once they are stored; raises :class:`RecordsNotStored` when they are not.

    The store runs shielded: a handler cancelled meanwhile leaves it to finish, and the
    shutdown waits for it.
    """
    turn = ConversationTurn(
        query=it.redacted_query,
        response=answer,
        provider=it.provider.name,
        model=it.model,
        truncated=cut_short,
        started_at=it.started_at,
    )
    transcript = None
    udc = config_from(request).user_data_collection
    if udc.transcripts_enabled:
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
            attachments=tuple(a.to_dict(include_image=udc.transcripts_include_images) for a in it.attachments),
        )
    await pending_stores_from(request).run(
        store_answer(
            storage_from(request),
            metrics_from(request).queries,
            conversation_id=it.conversation_id,
            turn=turn,
            transcript=transcript,
            owner=it.new_owner,
        )
    )


# --------------------------------------------------------------------------- handlers


_QUERY_ERRORS = (400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 504)


@operation(
    summary="Ask the LLM; the interaction is stored as a transcript",
    tags=["query"],
    request="QueryRequest",
    responses={200: "QueryResponse"},
    errors=_QUERY_ERRORS,
)
@requires(Action.QUERY)
async def query(request: web.Request) -> web.Response:
    it = await begin(request)
    started = time.perf_counter()
    try:
        completion = await it.provider.complete(model=it.model, messages=it.messages)
    except LLMError as exc:
        _observe_llm(request, it, "/v1/query", started, error=exc)
        raise
    _observe_llm(request, it, "/v1/query", started, usage=completion.usage)
    await record(request, it, completion.text, cut_short=False)
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


def _observe_llm(
    request: web.Request,
    it: Interaction,
    endpoint: str,
    started: float,
    *,
    usage: Usage | None = None,
    error: LLMError | None = None,
) -> None:
    """One call's outcome: the provider's health for ``/readiness``, and the upstream's
    ``ls_llm_*`` series (``endpoint`` as the upstream names it)."""
    ok = error is None
    it.provider.health.record(ok=ok, message="" if error is None else f"{error.response} ({error.status})")
    metrics_from(request).lcs.observe_llm_call(
        provider=it.provider.name,
        model=it.model,
        endpoint=endpoint,
        seconds=time.perf_counter() - started,
        ok=ok,
        input_tokens=usage.input_tokens if usage is not None else 0,
        output_tokens=usage.output_tokens if usage is not None else 0,
    )


async def _finish_and_record(request: web.Request, it: Interaction, rid: str, answer: str, *, cut_short: bool) -> None:
    """The stream's end in the registry and its records in the store, side by side (one task,
    not ``gather``'s two: decision query-03); raises :class:`RecordsNotStored` after both."""
    finishing = asyncio.ensure_future(streams_from(request).finish(rid))
    try:
        await record(request, it, answer, cut_short=cut_short)
    finally:
        await finishing


async def _record_cut_short(request: web.Request, it: Interaction, partial: str, rid: str) -> None:
    """Store what an abandoned or failed stream got; a failure is logged (and counted), as
    nobody is left to tell."""
    try:
        await record(request, it, partial, cut_short=True)
    except RecordsNotStored:
        log.error("streaming query %s: the records of the cut-short answer could not be stored", rid)


@operation(
    summary="Ask the LLM and stream the answer as server-sent events (or plain text)",
    tags=["query"],
    request="QueryRequest",
    responses={
        200: Response(
            description="Events start, token..., turn_complete, end (or error, interrupted); text/plain when asked",
            content={
                # Each event: one data line holding {"event": ..., "data": {...}} as JSON.
                "text/event-stream": {
                    "type": "object",
                    "properties": {"data": {"type": "string", "contentMediaType": "application/json"}},
                    "required": ["data"],
                },
                "text/plain": {"type": "string"},
            },
        )
    },
    errors=_QUERY_ERRORS,
)
@requires(Action.STREAMING_QUERY)
async def streaming_query(request: web.Request) -> web.StreamResponse:
    it = await begin(request)
    streams = streams_from(request)
    # Registered for interrupts from any worker while the LLM prepares its first token; the
    # stream's id is the request's, unless another stream holds that one already.
    registered = asyncio.ensure_future(
        streams.register(request_id_from(request, ""), owner=hash_user_id(it.user.user_id))
    )
    started = time.perf_counter()
    try:
        stream = await it.provider.stream(model=it.model, messages=it.messages)  # refusals are plain JSON errors
    except BaseException as exc:
        if isinstance(exc, LLMError):
            _observe_llm(request, it, "/v1/streaming_query", started, error=exc)
        await streams.finish(await registered)
        raise
    rid = await registered
    text = it.request.media_type == MEDIA_TYPE_TEXT
    # A text stream sends its headers at once; an event stream's wait for its first write.
    response = (web.StreamResponse if text else EventStreamResponse)(
        headers={
            "Content-Type": "text/plain; charset=utf-8" if text else "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Request-ID": request_id_from(request, ""),
        }
    )
    parts: list[str] = []
    recorded = False
    llm_error: LLMError | None = None
    sink = EventSink(response, text=text)
    try:
        await response.prepare(request)
        sink.start(it.conversation_id, rid)

        async def pump() -> None:
            async for batch in stream.tokens:
                if batch:
                    first = len(parts)
                    parts.extend(batch)
                    await sink.tokens(first, batch)
                else:  # the provider waits for more: what came so far goes out now
                    await sink.flush()
            await sink.flush()  # the whole answer is out before its records are stored

        if await streams.pump(rid, pump()):  # interrupted by its user
            partial = "".join(parts)
            suffix = interrupted_suffix(partial)
            recorded = True
            try:
                await _finish_and_record(request, it, rid, partial + suffix, cut_short=True)
            except RecordsNotStored as exc:
                await sink.fail(len(parts), partial + suffix, exc)
                return response
            await sink.interrupted(len(parts), suffix, rid)
            log.info("streaming query %s interrupted by its user after %d tokens", rid, len(parts))
            return response
        answer = "".join(parts)
        recorded = True
        try:
            await _finish_and_record(request, it, rid, answer, cut_short=False)
        except RecordsNotStored as exc:
            await sink.fail(len(parts), answer, exc)  # an error event in place of the end
        else:
            await sink.complete(len(parts), answer, truncated=it.history_truncated, usage=stream.usage)
    except LLMError as exc:
        llm_error = exc
        log.warning("streaming query %s: the LLM failed after %d tokens: %s", rid, len(parts), exc)
        recorded = True
        await _record_cut_short(request, it, "".join(parts), rid)  # stored before the client hears the end
        try:
            await sink.error(exc)
            await response.write_eof()
        except ConnectionResetError:
            pass
    except ConnectionResetError:
        log.info("streaming query %s: the client went away after %d tokens", rid, len(parts))
    finally:
        _observe_llm(request, it, "/v1/streaming_query", started, usage=stream.usage, error=llm_error)
        await stream.aclose()
        await streams.finish(rid)  # a no-op when already done
        if not recorded:
            await _record_cut_short(request, it, "".join(parts), rid)
    return response


def add_routes(app: web.Application, prefixes: tuple[str, ...]) -> None:
    """The query routes under each prefix."""
    for prefix in prefixes:
        app.router.add_post(f"{prefix}/query", query)
        app.router.add_post(f"{prefix}/streaming_query", streaming_query)
