"""``/v1/feedback`` and ``/v1/feedback/status``, wire-compatible with the Lightspeed Core Stack."""

from __future__ import annotations

import logging

from aiohttp import web

from lightspeed.actions import Action
from lightspeed.api.common import authenticate, check_conversation_access, storage_failure
from lightspeed.api.errors import ApiError, json_response
from lightspeed.api.openapi import operation
from lightspeed.api.validation import BodyChecker, read_json_body
from lightspeed.auth.routes import public, requires
from lightspeed.records import (
    FeedbackRecord,
    RecordKind,
    canonical_conversation_id,
    hash_user_id,
    new_record_id,
    utc_timestamp,
)
from lightspeed.state import config_from, storage_from
from lightspeed.storage import FEEDBACK_ENABLED_FLAG, StorageRootUnavailable, StorageUnavailable

__all__ = ["add_routes"]

log = logging.getLogger("lightspeed.api.feedback")

MAX_USER_FEEDBACK_CHARS = 4096


_FEEDBACK_FIELDS = ("conversation_id", "user_question", "llm_response", "sentiment", "user_feedback", "categories")


async def feedback_enabled(request: web.Request) -> bool:
    """The shared flag when it was ever set, else ``user_data_collection.feedback_enabled``."""
    try:
        flag = await storage_from(request).get_flag(FEEDBACK_ENABLED_FLAG)
    except StorageUnavailable as exc:
        raise storage_failure(exc, "Failed to read feedback status") from exc
    return config_from(request).user_data_collection.feedback_enabled if flag is None else flag


@operation(
    summary="Store feedback on an answer",
    tags=["feedback"],
    request="FeedbackRequest",
    responses={200: "FeedbackResponse"},
    errors=[400, 401, 403, 404, 413, 422, 500, 503],
)
@requires(Action.FEEDBACK)
async def post_feedback(request: web.Request) -> web.Response:
    user = await authenticate(request)
    if not await feedback_enabled(request):
        raise ApiError(403, "Storing feedback is disabled", "Storing feedback is disabled.")
    config = config_from(request)
    body = await read_json_body(request, limit=config.service.max_request_body_bytes)

    c = BodyChecker(body, allowed=_FEEDBACK_FIELDS)
    conversation_id = c.string("conversation_id", required=True)
    user_question = c.string("user_question", required=True)
    llm_response = c.string("llm_response", required=True)
    sentiment = c.integer("sentiment")
    user_feedback = c.string("user_feedback", max_length=MAX_USER_FEEDBACK_CHARS)
    categories = c.string_list("categories", choices=config.user_data_collection.feedback_categories)
    if conversation_id is not None:
        canonical = canonical_conversation_id(conversation_id)
        if canonical is None:
            c.value_error(["conversation_id"], f"Improper conversation ID '{conversation_id}'", conversation_id)
        conversation_id = canonical
    if sentiment is not None and sentiment not in (-1, 1):
        c.value_error(["sentiment"], f"Improper sentiment value of {sentiment}, needs to be -1 or 1", sentiment)
    if categories is not None:
        categories = list(dict.fromkeys(categories)) or None  # duplicates dropped, order kept; [] means none
    if not c.errors and sentiment is None and not user_feedback and not categories:
        c.value_error(
            [],
            "At least one form of feedback must be provided: 'sentiment', 'user_feedback', or 'categories'",
            body,
        )
    c.raise_if_errors()
    assert conversation_id is not None and user_question is not None and llm_response is not None

    await check_conversation_access(request, conversation_id, user, action="submit feedback for")
    record = FeedbackRecord(
        record_id=new_record_id(),
        user_id=hash_user_id(user.user_id),
        conversation_id=conversation_id,
        user_question=user_question,
        llm_response=llm_response,
        sentiment=sentiment,
        user_feedback=user_feedback,
        categories=tuple(categories) if categories is not None else None,
    )
    try:
        stored = await storage_from(request).put_feedback(record)
    except StorageUnavailable as exc:
        log.error("failed to store feedback for conversation %s: %s", conversation_id, exc)
        if isinstance(exc, StorageRootUnavailable):  # the upstream's body: its directory, not the cause
            raise ApiError(
                500, "Failed to store feedback", f"Failed to store feedback at directory: {exc.root}"
            ) from exc
        raise storage_failure(exc, "Failed to store feedback") from exc
    log.debug("stored feedback %s (%d bytes)", stored.name, stored.size)
    return json_response({"response": "feedback received"})


@operation(
    summary="Whether feedback is enabled",
    tags=["feedback"],
    responses={200: "FeedbackStatusResponse"},
    errors=[500, 503],
)
@public
async def get_feedback_status(request: web.Request) -> web.Response:
    enabled = await feedback_enabled(request)
    return json_response({"functionality": "feedback", "status": {"enabled": enabled}})


@operation(
    summary="Enable or disable feedback (shared by every worker and replica)",
    tags=["feedback"],
    request="FeedbackStatusUpdateRequest",
    responses={200: "FeedbackStatusUpdateResponse"},
    errors=[400, 401, 403, 409, 413, 422, 500, 503],
)
@requires(Action.ADMIN)
async def put_feedback_status(request: web.Request) -> web.Response:
    user = await authenticate(request)
    config = config_from(request)
    body = await read_json_body(request, limit=config.service.max_request_body_bytes)
    c = BodyChecker(body, allowed=("status",))
    status = c.boolean("status", required=True)
    c.raise_if_errors()
    assert status is not None
    storage = storage_from(request)
    if status and not storage.accepts(RecordKind.FEEDBACK):
        raise ApiError(
            409,
            "Cannot enable feedback",
            f"Storage backend {storage.name!r} has nowhere to store feedback"
            " (set user_data_collection.feedback_storage).",
        )
    try:
        previous = await storage.set_flag(FEEDBACK_ENABLED_FLAG, value=status)
    except StorageUnavailable as exc:
        raise storage_failure(exc, "Failed to update feedback status") from exc
    if previous is None:
        previous = config.user_data_collection.feedback_enabled
    # The user id's hash, as transcripts store it: no raw user id in the log.
    log.info("feedback status changed from %s to %s by user %s", previous, status, hash_user_id(user.user_id))
    return json_response(
        {
            "status": {
                "previous_status": previous,
                "updated_status": status,
                "updated_by": user.user_id,
                "timestamp": utc_timestamp(),
            }
        }
    )


async def _say_when_the_flag_overrides_the_config(app: web.Application) -> None:
    """At start-up, a flag set with ``PUT /v1/feedback/status`` wins over the YAML file: say so."""
    configured = config_from(app).user_data_collection.feedback_enabled
    try:
        flag = await storage_from(app).get_flag(FEEDBACK_ENABLED_FLAG)
    except Exception:  # noqa: BLE001 - a log line must not stop the start; requests and /readiness report it
        return
    if flag is not None and flag != configured:
        log.warning(
            "feedback is %s by an earlier PUT /v1/feedback/status (kept in the %r store), although"
            " user_data_collection.feedback_enabled is %s; PUT /v1/feedback/status to change it",
            "enabled" if flag else "disabled",
            storage_from(app).name,
            str(configured).lower(),
        )


def add_routes(app: web.Application, prefixes: tuple[str, ...]) -> None:
    app.on_startup.append(_say_when_the_flag_overrides_the_config)
    for prefix in prefixes:
        app.router.add_post(f"{prefix}/feedback", post_feedback)
        app.router.add_get(f"{prefix}/feedback/status", get_feedback_status)
        app.router.add_put(f"{prefix}/feedback/status", put_feedback_status)
