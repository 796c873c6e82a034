"""The query request: its fields, validated as the upstream's pydantic model does, and the
prompt built from the query and its attachments.

Attachments are text (a log, a configuration, an error message...) or images, checked as
:mod:`lightspeed.api.attachments` says. Text attachments go into the prompt text; images go
to the LLM as image parts of the user message, never into the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs

from lightspeed.api.attachments import (
    ATTACHMENT_CONTENT_TYPES,
    ATTACHMENT_TYPES,
    check_image,
)
from lightspeed.api.errors import ApiError
from lightspeed.api.validation import BodyChecker
from lightspeed.llm import Image
from lightspeed.records import canonical_conversation_id

__all__ = [
    "ATTACHMENT_CONTENT_TYPES",
    "ATTACHMENT_TYPES",
    "DEFAULT_SYSTEM_PROMPT",
    "MEDIA_TYPE_JSON",
    "MEDIA_TYPE_TEXT",
    "Attachment",
    "QueryRequest",
    "check_attachments",
    "parse_query_request",
    "prompt_images",
    "prompt_text",
]

MEDIA_TYPE_JSON: Final = "application/json"
MEDIA_TYPE_TEXT: Final = "text/plain"
DEFAULT_SYSTEM_PROMPT: Final = "You are a helpful assistant"
INVALID_ATTRIBUTE: Final = "Invalid attribute value"

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


@attrs.frozen(kw_only=True)
class Attachment:
    """One attachment of a query: a log, a configuration, an error message... or an image."""

    attachment_type: str
    content_type: str
    #: The text; for an image, its bytes in base64.
    content: str
    #: For an image: its size in bytes, decoded (``None`` for text).
    image_bytes: int | None = None

    @property
    def is_image(self) -> bool:
        return self.image_bytes is not None

    def to_dict(self, *, include_image: bool = True) -> dict[str, Any]:
        """The attachment as a transcript records it: the request's three fields, except that an
        image without ``include_image`` is its type and size (``size_bytes``), not its bytes."""
        if self.image_bytes is not None and not include_image:
            return {
                "attachment_type": self.attachment_type,
                "content_type": self.content_type,
                "size_bytes": self.image_bytes,
            }
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


def parse_query_request(body: Any, *, max_image_bytes: int) -> QueryRequest:
    """Validate a query body as the upstream's pydantic model does; raises ``ValidationFailed``.

    ``max_image_bytes`` is the largest image attachment accepted (decoded).
    """
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
    attachments = _attachments(c, max_image_bytes)
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


def _attachments(c: BodyChecker, max_image_bytes: int) -> tuple[Attachment, ...]:
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
            # The upstream's model validator runs once the attachment's own fields are valid.
            try:
                image_bytes = check_image(**fields, limit=max_image_bytes)
            except ValueError as exc:
                c.value_error(loc, str(exc), item)
                continue
            out.append(Attachment(**fields, image_bytes=image_bytes))
    return tuple(out)


def check_attachments(attachments: Sequence[Attachment]) -> None:
    """The upstream's metadata check, after the body's validation: a 422 ``Invalid attribute
    value`` naming the first unknown type or content type and the allowed ones."""
    for att in attachments:
        if att.attachment_type not in ATTACHMENT_TYPES:
            cause = f"Invalid attachment type {att.attachment_type}: must be one of {list(ATTACHMENT_TYPES)}"
            raise ApiError(422, INVALID_ATTRIBUTE, cause)
        if att.content_type not in ATTACHMENT_CONTENT_TYPES:
            allowed = list(ATTACHMENT_CONTENT_TYPES)
            cause = f"Invalid attachment content type {att.content_type}: must be one of {allowed}"
            raise ApiError(422, INVALID_ATTRIBUTE, cause)


def prompt_text(query: str, attachments: Sequence[Attachment]) -> str:
    """The user message's text: the (redacted) query, then each text attachment under a header
    line naming its place among all the attachments. Images are not part of the text."""
    parts = [query]
    for i, att in enumerate(attachments, 1):
        if not att.is_image:
            parts.append(f"[Attachment {i}: {att.attachment_type}, {att.content_type}]\n{att.content}")
    return "\n\n".join(parts)


def prompt_images(attachments: Sequence[Attachment]) -> tuple[Image, ...]:
    """The image attachments, in order, as the LLM receives them."""
    return tuple(
        Image(content_type=a.content_type, data=a.content, size=a.image_bytes)
        for a in attachments
        if a.image_bytes is not None
    )
