"""Image attachments: the upstream's 422s, image parts for OpenAI-compatible providers, the
echo provider, and transcripts that keep an image's type and size (its bytes only when asked).

Every test runs the real app on a loopback server, with a real fake OpenAI-compatible server
(``fake_llm.py``) behind it and real files in a temporary directory.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.query.fake_llm import FakeLLM
from tests.query.query_support import Client, all_files, sse_events, transcripts

#: A real 1x1 PNG (70 bytes) and the start of a JPEG (the signature, then a JFIF header).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(64))
PNG_B64 = base64.b64encode(PNG).decode()
JPEG_B64 = base64.b64encode(JPEG).decode()
PNG_IMAGE = {"attachment_type": "image", "content_type": "image/png", "content": PNG_B64}
JPEG_IMAGE = {"attachment_type": "image", "content_type": "image/jpeg", "content": JPEG_B64}
LOG = {"attachment_type": "log", "content_type": "text/plain", "content": "E0001 crash"}
PATHS = ("/v1/query", "/v1/streaming_query")
SYSTEM = {"role": "system", "content": "You are a helpful assistant"}


async def post(client: Client, body: dict[str, Any], path: str = "/v1/query") -> tuple[int, Any]:
    """The status and the answer: JSON, or for a stream the answer text joined from its events."""
    resp = await client.post(path, json=body)
    if resp.status == 200 and path.endswith("streaming_query"):
        events = sse_events(await resp.text())
        assert events[-1]["event"] == "end", events
        return 200, {"response": "".join(e["data"]["token"] for e in events if e["event"] == "token")}
    return resp.status, await resp.json()


def value_error(index: int, attachment: dict[str, Any], message: str) -> dict[str, Any]:
    """One entry of the 422 list, as FastAPI gives the upstream's attachment validator's error."""
    return {
        "type": "value_error",
        "loc": ["body", "attachments", index],
        "msg": f"Value error, {message}",
        "input": attachment,
        "ctx": {"error": message},
    }


def image(content: str, content_type: str = "image/png", attachment_type: str = "image") -> dict[str, Any]:
    return {"attachment_type": attachment_type, "content_type": content_type, "content": content}


# ------------------------------------------------------------------ the 422 list


BAD_IMAGES = [
    pytest.param(
        image("not base64!"),
        "Invalid base64 content for image attachment: Only base64 data is allowed",
        id="not-base64",
    ),
    pytest.param(
        image(PNG_B64[:-2]),
        "Invalid base64 content for image attachment: Incorrect padding",
        id="bad-padding",
    ),
    pytest.param(
        image(PNG_B64[:20] + "\n" + PNG_B64[20:]),
        "Invalid base64 content for image attachment: Only base64 data is allowed",
        id="line-break",
    ),
    pytest.param(
        image("iVBORé"),
        "Invalid base64 content for image attachment: string argument should contain only ASCII characters",
        id="not-ascii",
    ),
    pytest.param(
        image(JPEG_B64, "image/png"),
        "Image content does not match declared content_type 'image/png': invalid image data",
        id="jpeg-declared-png",
    ),
    pytest.param(
        image(PNG_B64, "image/jpeg"),
        "Image content does not match declared content_type 'image/jpeg': invalid image data",
        id="png-declared-jpeg",
    ),
    pytest.param(
        image(base64.b64encode(b"\x89PNG but not the rest of the signature").decode()),
        "Image content does not match declared content_type 'image/png': invalid image data",
        id="half-a-png-signature",
    ),
    pytest.param(
        image(""),
        "Image content does not match declared content_type 'image/png': invalid image data",
        id="empty",
    ),
    pytest.param(
        image(PNG_B64, "text/plain"),
        "attachment_type and content_type are inconsistent: attachment_type='image', content_type='text/plain'",
        id="image-as-text",
    ),
    pytest.param(
        image(PNG_B64, "image/gif"),
        "attachment_type and content_type are inconsistent: attachment_type='image', content_type='image/gif'",
        id="image-gif",
    ),
    pytest.param(
        image(PNG_B64, "image/png", "log"),
        "attachment_type and content_type are inconsistent: attachment_type='log', content_type='image/png'",
        id="log-as-png",
    ),
    pytest.param(
        image("x", "image/jpeg", "diary"),
        "attachment_type and content_type are inconsistent: attachment_type='diary', content_type='image/jpeg'",
        id="unknown-type-as-jpeg",
    ),
]


@pytest.mark.parametrize(("attachment", "message"), BAD_IMAGES)
async def test_a_bad_image_is_a_422_value_error_in_the_list(
    query_client: Any, fake_llm: FakeLLM, attachment: dict[str, Any], message: str
) -> None:
    client = await query_client()
    for path in PATHS:
        status, got = await post(client, {"query": "What is this?", "attachments": [LOG, attachment]}, path)
        assert status == 422, got
        assert got == {"detail": [value_error(1, attachment, message)]}
    assert fake_llm.requests == []
    assert await transcripts(client) == []


async def test_an_image_over_the_limit_is_a_422_naming_both_sizes(query_client: Any, fake_llm: FakeLLM) -> None:
    client = await query_client(service={"max_image_attachment_bytes": len(PNG) - 1})
    for path in PATHS:
        status, got = await post(client, {"query": "q", "attachments": [PNG_IMAGE]}, path)
        assert status == 422
        message = f"Image attachment ({len(PNG)} bytes) exceeds maximum allowed size ({len(PNG) - 1} bytes)"
        assert got == {"detail": [value_error(0, PNG_IMAGE, message)]}
    # Exactly at the limit is welcome.
    client = await query_client(service={"max_image_attachment_bytes": len(PNG)})
    status, _ = await post(client, {"query": "q", "attachments": [PNG_IMAGE]})
    assert status == 200
    assert len(fake_llm.requests) == 1


async def test_every_bad_attachment_is_listed_with_the_other_problems(query_client: Any, fake_llm: FakeLLM) -> None:
    """As pydantic: each attachment is validated on its own, beside the other fields."""
    client = await query_client()
    bad_base64 = image("???")
    inconsistent = image(PNG_B64, "application/json")
    body = {"query": "q", "no_tools": "yes", "attachments": [bad_base64, PNG_IMAGE, inconsistent, {"content": 1}]}
    status, got = await post(client, body)
    assert status == 422
    assert got["detail"] == [
        {"type": "bool_type", "loc": ["body", "no_tools"], "msg": "Input should be a valid boolean", "input": "yes"},
        value_error(0, bad_base64, "Invalid base64 content for image attachment: Only base64 data is allowed"),
        value_error(
            2,
            inconsistent,
            "attachment_type and content_type are inconsistent: attachment_type='image',"
            " content_type='application/json'",
        ),
        {
            "type": "missing",
            "loc": ["body", "attachments", 3, "attachment_type"],
            "msg": "Field required",
            "input": {"content": 1},
        },
        {
            "type": "missing",
            "loc": ["body", "attachments", 3, "content_type"],
            "msg": "Field required",
            "input": {"content": 1},
        },
        {
            "type": "string_type",
            "loc": ["body", "attachments", 3, "content"],
            "msg": "Input should be a valid string",
            "input": 1,
        },
    ]
    assert fake_llm.requests == []


async def test_a_lone_surrogate_in_an_image_is_the_unicode_422(query_client: Any, fake_llm: FakeLLM) -> None:
    client = await query_client()
    raw = json.dumps({"query": "q", "attachments": [image(PNG_B64 + "\ud800")]}).encode()
    for path in PATHS:
        resp = await client.post(path, data=raw, headers={"Content-Type": "application/json"})
        assert resp.status == 422
        [error] = (await resp.json())["detail"]
        assert (error["type"], error["loc"]) == ("string_unicode", ["body", "attachments", 0, "content"])
    assert fake_llm.requests == []


ALLOWED_TYPES = "['alert', 'api object', 'configuration', 'error message', 'event', 'image', 'log', 'stack trace']"
ALLOWED_CONTENT_TYPES = (
    "['application/json', 'application/xml', 'application/yaml', 'image/jpeg', 'image/png', 'text/plain']"
)


@pytest.mark.parametrize(
    ("attachment", "cause"),
    [
        (
            {"attachment_type": "diary", "content_type": "text/plain", "content": "x"},
            f"Invalid attachment type diary: must be one of {ALLOWED_TYPES}",
        ),
        (
            {"attachment_type": "log", "content_type": "text/html", "content": "<p>x</p>"},
            f"Invalid attachment content type text/html: must be one of {ALLOWED_CONTENT_TYPES}",
        ),
    ],
)
async def test_an_unknown_type_is_a_422_invalid_attribute_value(
    query_client: Any, fake_llm: FakeLLM, attachment: Any, cause: str
) -> None:
    client = await query_client()
    for path in PATHS:
        status, got = await post(client, {"query": "q", "attachments": [PNG_IMAGE, attachment]}, path)
        assert status == 422
        assert got == {"detail": {"response": "Invalid attribute value", "cause": cause}}
    assert fake_llm.requests == []
    assert await transcripts(client) == []


# ------------------------------------------------------------------ the LLM


@pytest.mark.parametrize("path", PATHS)
async def test_an_openai_compatible_provider_gets_image_parts(query_client: Any, fake_llm: FakeLLM, path: str) -> None:
    client = await query_client()
    body = {"query": "What is in these?", "attachments": [PNG_IMAGE, LOG, JPEG_IMAGE]}
    status, got = await post(client, body, path)
    assert status == 200, got
    [sent] = fake_llm.requests
    assert sent["messages"] == [
        SYSTEM,
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?\n\n[Attachment 2: log, text/plain]\nE0001 crash"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG_B64}"}},
            ],
        },
    ]
    text = "What is in these?\n\n[Attachment 2: log, text/plain]\nE0001 crash"
    assert got["response"] == f"You asked: {text} (image: image/png, 70 bytes) (image: image/jpeg, {len(JPEG)} bytes)"


async def test_a_follow_up_sends_the_earlier_question_without_its_image(query_client: Any, fake_llm: FakeLLM) -> None:
    """History turns keep the query's text: an image is sent with its own question only."""
    client = await query_client()
    status, first = await post(client, {"query": "What is this?", "attachments": [PNG_IMAGE]})
    assert status == 200
    status, _ = await post(client, {"query": "And now?", "conversation_id": first["conversation_id"]})
    assert status == 200
    assert fake_llm.requests[1]["messages"] == [
        SYSTEM,
        {"role": "user", "content": "What is this?"},
        {"role": "assistant", "content": "You asked: What is this? (image: image/png, 70 bytes)"},
        {"role": "user", "content": "And now?"},
    ]


async def test_query_filters_redact_text_attachments_but_leave_images_whole(
    query_client: Any, fake_llm: FakeLLM
) -> None:
    # A filter that matches inside the PNG's base64 (and in the log).
    client = await query_client(query_filters=[{"name": "a", "pattern": "AAAA", "replace_with": "<x>"}])
    log = {**LOG, "content": "AAAA-1"}
    status, _ = await post(client, {"query": "q", "attachments": [log, PNG_IMAGE]})
    assert status == 200
    content = fake_llm.requests[0]["messages"][-1]["content"]
    assert content[0]["text"] == "q\n\n[Attachment 1: log, text/plain]\n<x>-1"
    assert content[1]["image_url"]["url"] == f"data:image/png;base64,{PNG_B64}"


@pytest.mark.parametrize("path", PATHS)
async def test_the_echo_provider_says_it_received_the_images(query_client: Any, path: str) -> None:
    client = await query_client()
    body = {"query": "Look", "provider": "local", "model": "echo", "attachments": [JPEG_IMAGE, PNG_IMAGE]}
    status, got = await post(client, body, path)
    assert status == 200, got
    assert got["response"] == (
        f"Look\n\n[Image 1 received: image/jpeg, {len(JPEG)} bytes]\n\n[Image 2 received: image/png, 70 bytes]"
    )


# ------------------------------------------------------------------ transcripts


@pytest.mark.parametrize("path", PATHS)
async def test_transcripts_record_an_images_type_and_size_not_its_bytes(
    query_client: Any, fake_llm: FakeLLM, tmp_path: Path, path: str
) -> None:
    client = await query_client()
    status, _ = await post(client, {"query": "What is this?", "attachments": [LOG, PNG_IMAGE]}, path)
    assert status == 200
    [stored] = await transcripts(client)
    assert stored["attachments"] == [
        LOG,
        {"attachment_type": "image", "content_type": "image/png", "size_bytes": 70},
    ]
    # Nothing stored anywhere (transcript, history, state) holds the image.
    files = all_files(tmp_path)
    assert files
    for file in files:
        data = file.read_bytes()
        assert PNG_B64.encode() not in data and PNG not in data, file


@pytest.mark.parametrize("path", PATHS)
async def test_transcripts_include_images_keeps_the_base64(query_client: Any, fake_llm: FakeLLM, path: str) -> None:
    client = await query_client(user_data_collection={"transcripts_include_images": True})
    status, _ = await post(client, {"query": "What is this?", "attachments": [JPEG_IMAGE, LOG]}, path)
    assert status == 200
    [stored] = await transcripts(client)
    assert stored["attachments"] == [JPEG_IMAGE, LOG]


async def test_the_openapi_document_describes_images_and_its_example_is_accepted(
    query_client: Any, fake_llm: FakeLLM
) -> None:
    client = await query_client()
    resp = await client.get("/openapi.json")
    schema = (await resp.json())["components"]["schemas"]["Attachment"]
    assert "image" in schema["properties"]["attachment_type"]["examples"]
    assert {"image/png", "image/jpeg"} <= set(schema["properties"]["content_type"]["examples"])
    assert "max_image_attachment_bytes" in schema["description"]
    [example] = [e for e in schema["examples"] if e["attachment_type"] == "image"]
    status, _ = await post(client, {"query": "q", "attachments": [example]})
    assert status == 200
    part = fake_llm.requests[0]["messages"][-1]["content"][1]
    assert part == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{example['content']}"}}
