"""JSON schemas (OpenAPI 3.1, JSON Schema 2020-12) of the request and response bodies.

Shapes are the Lightspeed Core Stack's. Request schemas say what the handlers accept
(unknown fields are rejected, as the handlers reject them); rules across fields (``model``
needs ``provider``) are in the descriptions and answered with 422. Response schemas
require the fields a client may rely on. The tests check both against the live handlers.
"""

from __future__ import annotations

from typing import Any, Final

from lightspeed.api.attachments import ATTACHMENT_CONTENT_TYPES, ATTACHMENT_TYPES, IMAGE_CONTENT_TYPES

__all__ = ["COMPONENTS", "ref"]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], *, required: tuple[str, ...] = (), closed: bool = False, **extra: Any) -> Any:
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": list(required), **extra}
    if closed:
        out["additionalProperties"] = False
    return out


#: The smallest PNG: one transparent pixel.
_PNG_1X1: Final = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
_STR: Final = {"type": "string"}
_INT: Final = {"type": "integer"}
_BOOL: Final = {"type": "boolean"}
_NUM: Final = {"type": "number"}
#: A UUID (any case) or ``conv_`` and 48 hex digits, as the handlers accept them.
CONVERSATION_ID_PATTERN: Final = (
    r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|conv_[0-9a-f]{48})$"
)
COMPONENTS: Final[dict[str, Any]] = {
    # ------------------------------------------------------------------ errors
    "ErrorDetail": _obj({"response": _STR, "cause": _STR}, required=("response", "cause")),
    "ErrorResponse": _obj(
        {"detail": {"anyOf": [ref("ErrorDetail"), _STR]}},
        required=("detail",),
        description="Every error but validation: {detail: {response, cause}} (404/405 of the router: a string)",
    ),
    "ValidationError": _obj(
        {
            "type": _STR,
            "loc": {"type": "array", "items": {"anyOf": [_STR, _INT]}},
            "msg": _STR,
            "input": {},
            "ctx": {"type": "object"},
        },
        required=("type", "loc", "msg"),
    ),
    "HTTPValidationError": _obj(
        {"detail": {"type": "array", "items": ref("ValidationError")}},
        required=("detail",),
        description="422: every problem with the request, as FastAPI lists them",
    ),
    # ------------------------------------------------------------------ query
    "Attachment": _obj(
        {
            "attachment_type": {"type": "string", "examples": list(ATTACHMENT_TYPES)},
            "content_type": {"type": "string", "examples": list(ATTACHMENT_CONTENT_TYPES)},
            "content": {
                "type": "string",
                "description": "The text; for an image, its bytes in base64 (strict: no whitespace or line breaks)",
            },
        },
        required=("attachment_type", "content_type", "content"),
        closed=True,
        description=(
            f"attachment_type one of {', '.join(ATTACHMENT_TYPES)}; content_type one of"
            f" {', '.join(ATTACHMENT_CONTENT_TYPES)} (422 Invalid attribute value otherwise)."
            f" An image is attachment_type image with content_type {' or '.join(IMAGE_CONTENT_TYPES)}"
            " (one without the other is a 422): content is the image's bytes in base64, which must"
            " decode, start with the format's signature and be at most service.max_image_attachment_bytes"
            " bytes decoded (104857600 by default), else a 422 in the validation list. An image goes to"
            " the LLM as an image part of the user message, not as text."
        ),
        examples=[
            {"attachment_type": "log", "content_type": "text/plain", "content": "this is attachment"},
            {"attachment_type": "image", "content_type": "image/png", "content": _PNG_1X1},
        ],
    ),
    "QueryRequest": _obj(
        {
            "query": {"type": "string", "minLength": 1, "description": "The question; not blank"},
            "conversation_id": _nullable({"type": "string", "pattern": CONVERSATION_ID_PATTERN}),
            "provider": _nullable(_STR),
            "model": _nullable(_STR),
            "system_prompt": _nullable(_STR),
            "attachments": _nullable({"type": "array", "items": ref("Attachment")}),
            "no_tools": _nullable(_BOOL),
            "generate_topic_summary": _nullable(_BOOL),
            "media_type": _nullable({"type": "string", "enum": ["application/json", "text/plain"]}),
            "solr": _nullable({"type": "object"}),
            "vector_store_ids": _nullable({"type": "array", "items": _STR}),
            "shield_ids": _nullable({"type": "array", "items": _STR}),
        },
        required=("query",),
        closed=True,
        description="provider and model: both or neither (422 otherwise); an unknown one is 404",
    ),
    "QueryResponse": _obj(
        {
            "conversation_id": _STR,
            "response": _STR,
            "rag_chunks": {"type": "array"},
            "referenced_documents": {"type": "array"},
            "truncated": _BOOL,
            "input_tokens": _INT,
            "output_tokens": _INT,
            "available_quotas": {"type": "object"},
            "tool_calls": {"type": "array"},
            "tool_results": {"type": "array"},
        },
        required=("conversation_id", "response", "truncated", "input_tokens", "output_tokens"),
    ),
    "StreamingInterruptRequest": _obj({"request_id": _STR}, required=("request_id",), closed=True),
    "StreamingInterruptResponse": _obj(
        {"request_id": _STR, "interrupted": _BOOL, "message": _STR},
        required=("request_id", "interrupted", "message"),
    ),
    # ------------------------------------------------------------------ feedback
    "FeedbackRequest": _obj(
        {
            "conversation_id": {"type": "string"},
            "user_question": _STR,
            "llm_response": _STR,
            "sentiment": _nullable({"type": "integer", "enum": [-1, 1]}),
            "user_feedback": _nullable({"type": "string", "maxLength": 4096}),
            "categories": _nullable({"type": "array", "items": _STR}),
        },
        required=("conversation_id", "user_question", "llm_response"),
        closed=True,
        description="At least one of sentiment, user_feedback, categories (422 otherwise)",
    ),
    "FeedbackResponse": _obj({"response": {"type": "string", "const": "feedback received"}}, required=("response",)),
    "FeedbackStatusUpdateRequest": _obj({"status": _BOOL}, required=("status",), closed=True),
    "FeedbackStatusResponse": _obj(
        {"functionality": _STR, "status": _obj({"enabled": _BOOL}, required=("enabled",))},
        required=("functionality", "status"),
    ),
    "FeedbackStatusUpdateResponse": _obj(
        {
            "status": _obj(
                {"previous_status": _BOOL, "updated_status": _BOOL, "updated_by": _STR, "timestamp": _STR},
                required=("previous_status", "updated_status", "updated_by", "timestamp"),
            )
        },
        required=("status",),
    ),
    # ------------------------------------------------------------------ conversations
    "ConversationDetails": _obj(
        {
            "conversation_id": _STR,
            "created_at": _nullable(_STR),
            "last_message_at": _nullable(_STR),
            "message_count": _nullable(_INT),
            "last_used_model": _nullable(_STR),
            "last_used_provider": _nullable(_STR),
            "topic_summary": _nullable(_STR),
        },
        required=("conversation_id",),
    ),
    "ConversationsListResponse": _obj(
        {"conversations": {"type": "array", "items": ref("ConversationDetails")}}, required=("conversations",)
    ),
    "ConversationSummaryV2": _obj(
        {"conversation_id": _STR, "topic_summary": _nullable(_STR), "last_message_timestamp": _NUM},
        required=("conversation_id", "last_message_timestamp"),
    ),
    "ConversationsListResponseV2": _obj(
        {"conversations": {"type": "array", "items": ref("ConversationSummaryV2")}}, required=("conversations",)
    ),
    "Message": _obj(
        {"content": _STR, "type": {"type": "string", "enum": ["user", "assistant"]}, "referenced_documents": {}},
        required=("content", "type"),
    ),
    "ConversationTurn": _obj(
        {
            "messages": {"type": "array", "items": ref("Message")},
            "tool_calls": {"type": "array"},
            "tool_results": {"type": "array"},
            "provider": _STR,
            "model": _STR,
            "started_at": _nullable(_STR),
            "completed_at": _nullable(_STR),
        },
        required=("messages",),
    ),
    "ConversationResponse": _obj(
        {"conversation_id": _STR, "chat_history": {"type": "array", "items": ref("ConversationTurn")}},
        required=("conversation_id", "chat_history"),
    ),
    "ConversationDeleteResponse": _obj(
        {
            "conversation_id": _STR,
            "success": _BOOL,
            "response": _STR,
            "deleted": _BOOL,
            "deleted_records": _nullable(_obj({"transcripts": _INT, "feedback": _INT, "in_flight": _INT})),
        },
        required=("conversation_id", "success", "response", "deleted"),
    ),
    "ConversationUpdateRequest": _obj(
        {"topic_summary": {"type": "string", "minLength": 1, "maxLength": 1000}},
        required=("topic_summary",),
        closed=True,
    ),
    "ConversationUpdateResponse": _obj(
        {"conversation_id": _STR, "success": _BOOL, "message": _STR}, required=("conversation_id", "success", "message")
    ),
    # ------------------------------------------------------------------ service
    "LivenessResponse": _obj({"alive": _BOOL}, required=("alive",)),
    "ProviderHealthStatus": _obj(
        {"provider_id": _STR, "status": _STR, "message": _nullable(_STR)}, required=("provider_id", "status")
    ),
    "ReadinessImpact": _obj(
        {
            "component": _STR,
            "status": {"type": "string", "enum": ["degraded", "unhealthy"]},
            "reason": _STR,
            "impact": _STR,
        },
        required=("component", "status", "reason", "impact"),
    ),
    "ReadinessResponse": _obj(
        {
            "ready": _BOOL,
            "reason": _STR,
            "overall_status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "impacts": _nullable({"type": "array", "items": _STR}),
            "checks": {"type": "array", "items": ref("ReadinessImpact")},
            "data_collector": {"type": "object"},
            "providers": {"type": "array", "items": ref("ProviderHealthStatus")},
        },
        required=("ready", "reason", "overall_status", "impacts", "providers"),
    ),
    "CatalogModel": _obj(
        {
            "identifier": _STR,
            "metadata": {"type": "object"},
            "api_model_type": _STR,
            "provider_id": _STR,
            "type": {"type": "string", "const": "model"},
            "provider_resource_id": _STR,
            "model_type": _STR,
        },
        required=("identifier", "provider_id", "type", "provider_resource_id", "model_type"),
    ),
    "ModelsResponse": _obj({"models": {"type": "array", "items": ref("CatalogModel")}}, required=("models",)),
    "ConfigurationResponse": _obj(
        {"configuration": {"type": "object", "description": "The effective configuration, secrets as ********"}},
        required=("configuration",),
    ),
    "InfoResponse": _obj({"name": _STR, "service_version": _STR}, required=("name", "service_version")),
}
