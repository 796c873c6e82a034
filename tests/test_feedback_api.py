"""``POST /v1/feedback`` and ``/v1/feedback/status`` against the real app and real directories."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from lightspeed.auth import DEFAULT_USER_ID as DEFAULT_USER
from lightspeed.state import config_from, storage_from

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
NewConversation = Callable[..., Awaitable[str]]

UUID_JSON = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.json")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
SEED_KEYS = [
    "user_id",
    "timestamp",
    "conversation_id",
    "user_question",
    "llm_response",
    "sentiment",
    "user_feedback",
    "categories",
]


def body_for(conversation_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conversation_id": conversation_id,
        "user_question": "What is Kubernetes?",
        "llm_response": "Kubernetes is an open-source container orchestration system.",
        "sentiment": 1,
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP: Any = object()


def feedback_dir(client: Client) -> Path:
    path = config_from(client.app).user_data_collection.feedback_storage
    assert path is not None
    return Path(path)


def stored(client: Client) -> list[dict[str, Any]]:
    d = feedback_dir(client)
    return [json.loads(p.read_bytes()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


async def post(client: Client, body: Any, *, path: str = "/v1/feedback", **kw: Any) -> tuple[int, Any]:
    resp = await client.post(path, json=body, **kw)
    return resp.status, await resp.json()


async def errors_of(client: Client, body: Any = None, **kw: Any) -> list[dict[str, Any]]:
    if body is not None:
        kw["json"] = body
    resp = await client.post("/v1/feedback", **kw)
    assert resp.status == 422, await resp.text()
    detail = (await resp.json())["detail"]
    assert isinstance(detail, list) and detail
    for err in detail:
        assert {"type", "loc", "msg", "input"} <= set(err)
        assert err["loc"][0] == "body"
    return list(detail)


# ------------------------------------------------------------------ success and the stored record


@pytest.mark.parametrize("path", ["/v1/feedback", "/feedback"])
async def test_feedback_is_stored_in_the_seed_shape(
    make_client: MakeClient, new_conversation: NewConversation, path: str
) -> None:
    client = await make_client()
    cid = await new_conversation(client.app, "alice")
    body = body_for(cid, user_feedback="This response was very helpful", categories=["helpful"])
    status, answer = await post(client, body, path=f"{path}?user_id=alice")
    assert (status, answer) == (200, {"response": "feedback received"})

    files = sorted(feedback_dir(client).iterdir())
    assert len(files) == 1
    assert UUID_JSON.fullmatch(files[0].name)
    record = json.loads(files[0].read_bytes())
    assert list(record) == SEED_KEYS
    assert record["user_id"] == hashlib.sha256(b"alice").hexdigest()
    assert ISO_UTC.fullmatch(record["timestamp"])
    assert record["conversation_id"] == cid
    assert record["user_question"] == body["user_question"]
    assert record["llm_response"] == body["llm_response"]
    assert record["sentiment"] == 1 and type(record["sentiment"]) is int
    assert record["user_feedback"] == "This response was very helpful"
    assert record["categories"] == ["helpful"]


async def test_default_user_is_hashed(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    assert (await post(client, body_for(cid)))[0] == 200
    [record] = stored(client)
    assert record["user_id"] == hashlib.sha256(DEFAULT_USER.encode()).hexdigest()
    assert record["user_feedback"] is None and record["categories"] is None


async def test_categories_deduplicated_keeping_order(
    make_client: MakeClient, new_conversation: NewConversation
) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    cats = ["unsafe", "incorrect", "unsafe", "other", "incorrect"]
    assert (await post(client, body_for(cid, categories=cats)))[0] == 200
    assert stored(client)[0]["categories"] == ["unsafe", "incorrect", "other"]


async def test_empty_categories_mean_none(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    assert (await post(client, body_for(cid, categories=[])))[0] == 200
    assert stored(client)[0]["categories"] is None
    # [] alone is no feedback at all.
    errs = await errors_of(client, body_for(cid, sentiment=_DROP, categories=[]))
    assert [e["type"] for e in errs] == ["value_error"]


async def test_configurable_categories(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client(user_data_collection={"feedback_categories": ["too_long", "wrong_format"]})
    cid = await new_conversation(client.app)
    assert (await post(client, body_for(cid, categories=["wrong_format"])))[0] == 200
    errs = await errors_of(client, body_for(cid, categories=["helpful"]))
    assert errs[0]["type"] == "enum" and errs[0]["loc"] == ["body", "categories", 0]
    assert errs[0]["input"] == "helpful"
    assert "'too_long' or 'wrong_format'" in errs[0]["msg"]


async def test_no_categories_configured(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client(user_data_collection={"feedback_categories": []})
    cid = await new_conversation(client.app)
    errs = await errors_of(client, body_for(cid, categories=["other"]))
    assert [(e["type"], e["loc"]) for e in errs] == [("enum", ["body", "categories", 0])]
    assert (await post(client, body_for(cid, categories=[])))[0] == 200


# ------------------------------------------------------------------ 404 / 403


async def test_unknown_conversation_is_404(make_client: MakeClient) -> None:
    client = await make_client()
    cid = "11111111-2222-4333-8444-555555555555"
    status, answer = await post(client, body_for(cid))
    assert status == 404
    assert answer == {
        "detail": {"response": "Conversation not found", "cause": f"Conversation with ID {cid} does not exist"}
    }
    assert stored(client) == []


async def test_someone_elses_conversation_is_403(make_client: MakeClient, new_conversation: NewConversation) -> None:
    # No authorization section, so every caller has the *_other_conversations actions; feedback
    # stays the owner's all the same, as upstream (its feedback endpoint checks ownership, not actions).
    client = await make_client()
    cid = await new_conversation(client.app, "alice")
    status, answer = await post(client, body_for(cid), path="/v1/feedback?user_id=mallory")
    assert status == 403
    assert answer == {
        "detail": {
            "response": "User does not have permission to perform this action",
            "cause": f"User mallory does not have permission to submit feedback for conversation with ID {cid}",
        }
    }
    assert stored(client) == []


async def test_feedback_disabled_is_403(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client(user_data_collection={"feedback_enabled": False})
    cid = await new_conversation(client.app)
    status, answer = await post(client, body_for(cid))
    assert status == 403
    assert answer == {"detail": {"response": "Storing feedback is disabled", "cause": "Storing feedback is disabled."}}
    assert stored(client) == []


# ------------------------------------------------------------------ storage failure


async def test_storage_failure_is_500_and_service_keeps_running(
    make_client: MakeClient, new_conversation: NewConversation, tmp_path: Path
) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    fdir = feedback_dir(client)
    # Root ignores permissions, so make the directory unusable another way: a regular file in its place.
    shutil.rmtree(fdir, ignore_errors=True)
    fdir.write_bytes(b"not a directory")

    status, answer = await post(client, body_for(cid))
    assert status == 500
    assert answer["detail"]["response"] == "Failed to store feedback"
    assert answer["detail"]["cause"] == f"Failed to store feedback at directory: {fdir}"  # the upstream's words
    assert "Traceback" not in json.dumps(answer)

    resp = await client.get("/liveness")
    assert resp.status == 200
    assert not [p for p in all_files(tmp_path) if p.suffix == ".json" and "conversations" not in p.parts]

    fdir.unlink()
    assert (await post(client, body_for(cid)))[0] == 200
    assert len(stored(client)) == 1
    assert [p.name for p in fdir.iterdir() if not p.name.endswith(".json")] == []


# ------------------------------------------------------------------ validation (422)


async def test_missing_fields_all_listed(make_client: MakeClient) -> None:
    client = await make_client()
    errs = await errors_of(client, {"sentiment": 1})
    assert [(e["type"], e["loc"]) for e in errs] == [
        ("missing", ["body", "conversation_id"]),
        ("missing", ["body", "user_question"]),
        ("missing", ["body", "llm_response"]),
    ]
    assert errs[0]["msg"] == "Field required"


async def test_extra_fields_rejected(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    errs = await errors_of(client, body_for(cid, rating=5, model="x"))
    assert [(e["type"], e["loc"], e["input"]) for e in errs] == [
        ("extra_forbidden", ["body", "rating"], 5),
        ("extra_forbidden", ["body", "model"], "x"),
    ]
    assert errs[0]["msg"] == "Extra inputs are not permitted"
    assert stored(client) == []


@pytest.mark.parametrize(
    ("sentiment", "kind"),
    [
        (0, "value_error"),
        (2, "value_error"),
        (-2, "value_error"),
        ("1", "int_type"),
        (True, "int_type"),
        (0.5, "int_from_float"),
    ],
)
async def test_bad_sentiment(
    make_client: MakeClient, new_conversation: NewConversation, sentiment: Any, kind: str
) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    errs = await errors_of(client, body_for(cid, sentiment=sentiment))
    assert [(e["type"], e["loc"]) for e in errs] == [(kind, ["body", "sentiment"])]
    assert errs[0]["input"] == sentiment


async def test_negative_sentiment_accepted(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    assert (await post(client, body_for(cid, sentiment=-1)))[0] == 200
    assert stored(client)[0]["sentiment"] == -1


async def test_user_feedback_length_limit(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    errs = await errors_of(client, body_for(cid, user_feedback="x" * 4097))
    assert [(e["type"], e["loc"]) for e in errs] == [("string_too_long", ["body", "user_feedback"])]
    assert errs[0]["ctx"] == {"max_length": 4096}
    assert (await post(client, body_for(cid, user_feedback="é" * 4096)))[0] == 200
    assert stored(client)[0]["user_feedback"] == "é" * 4096


async def test_unknown_category(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    errs = await errors_of(client, body_for(cid, categories=["helpful", "boring", 3]))
    assert [(e["type"], e["loc"], e["input"]) for e in errs] == [
        ("enum", ["body", "categories", 1], "boring"),
        ("enum", ["body", "categories", 2], 3),
    ]
    errs = await errors_of(client, body_for(cid, categories="helpful"))
    assert [(e["type"], e["loc"]) for e in errs] == [("list_type", ["body", "categories"])]


@pytest.mark.parametrize(
    "fields",
    [
        {"sentiment": _DROP},
        {"sentiment": None},
        {"sentiment": _DROP, "user_feedback": ""},
        {"sentiment": _DROP, "user_feedback": None, "categories": None},
    ],
)
async def test_no_feedback_at_all(
    make_client: MakeClient, new_conversation: NewConversation, fields: dict[str, Any]
) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    errs = await errors_of(client, body_for(cid, **fields))
    assert len(errs) == 1
    assert errs[0]["type"] == "value_error" and errs[0]["loc"] == ["body"]
    assert "At least one form of feedback" in errs[0]["msg"]


async def test_every_problem_listed_at_once(make_client: MakeClient) -> None:
    client = await make_client()
    body = {"conversation_id": 5, "sentiment": 3, "user_feedback": "x" * 5000, "categories": ["nope"], "x": 1}
    errs = await errors_of(client, body)
    got = {(e["type"], tuple(e["loc"])) for e in errs}
    assert got == {
        ("extra_forbidden", ("body", "x")),
        ("string_type", ("body", "conversation_id")),
        ("missing", ("body", "user_question")),
        ("missing", ("body", "llm_response")),
        ("value_error", ("body", "sentiment")),
        ("string_too_long", ("body", "user_feedback")),
        ("enum", ("body", "categories", 0)),
    }


@pytest.mark.parametrize(
    "raw",
    [b'{"conversation_id": ', b"not json", b"", b'{"a": 1} trailing', b"\xff\xfe{}", b'{"q": "\xc3\x28"}'],
)
async def test_malformed_body_is_422(make_client: MakeClient, raw: bytes) -> None:
    client = await make_client()
    errs = await errors_of(client, data=raw, headers={"Content-Type": "application/json"})
    assert [e["type"] for e in errs] == ["json_invalid"]
    assert errs[0]["loc"][0] == "body" and isinstance(errs[0]["loc"][1], int)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "recursion"),
        (b'{"sentiment": ' + b"1" * 5000 + b"}", "4300 digits"),
        (b'{"sentiment": NaN}', "NaN is not valid JSON"),
        (b'{"sentiment": -Infinity}', "-Infinity is not valid JSON"),
    ],
)
async def test_json_python_would_choke_on_is_422(make_client: MakeClient, raw: bytes, error: str) -> None:
    client = await make_client()
    errs = await errors_of(client, data=raw, headers={"Content-Type": "application/json"})
    assert [e["type"] for e in errs] == ["json_invalid"]
    assert error in errs[0]["ctx"]["error"]


async def test_lone_surrogate_is_422(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    raw = json.dumps(body_for(cid, user_question="bad \ud800 half")).encode()  # valid JSON, not valid Unicode
    assert b"\\ud800" in raw
    errs = await errors_of(client, data=raw, headers={"Content-Type": "application/json"})
    assert [(e["type"], e["loc"]) for e in errs] == [("string_unicode", ["body", "user_question"])]
    assert stored(client) == []


@pytest.mark.parametrize("value", [[1, 2], ["conversation_id"], 42, 1.5, "text", None, True])
async def test_non_object_json_is_422(make_client: MakeClient, value: Any) -> None:
    client = await make_client()
    errs = await errors_of(client, data=json.dumps(value), headers={"Content-Type": "application/json"})
    assert errs == [
        {
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": value,
        }
    ]


@pytest.mark.parametrize(
    "cid",
    ["../../etc", "../../../tmp/x", "/etc/passwd", "a/b", "conv_", "..", "", "11111111-2222-4333-8444-55555555555\x00"],
)
async def test_bad_conversation_id_is_422_and_writes_nothing(make_client: MakeClient, tmp_path: Path, cid: str) -> None:
    client = await make_client()
    before = all_files(tmp_path)
    errs = await errors_of(client, body_for(cid))
    assert [(e["type"], e["loc"]) for e in errs] == [("value_error", ["body", "conversation_id"])]
    assert errs[0]["input"] == cid
    assert all_files(tmp_path) == before
    assert all_files(tmp_path.parent / "etc") == set()


# ------------------------------------------------------------------ size limits (413)


async def test_ten_megabyte_body_is_413(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    body = io.BytesIO(json.dumps(body_for(cid, user_feedback="x" * (10 * 1024 * 1024))).encode())
    resp = await client.post("/v1/feedback", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 413
    answer = await resp.json()
    assert answer["detail"]["response"] == "Request body too large"
    assert "1048576" in answer["detail"]["cause"]
    assert stored(client) == []
    assert (await client.get("/liveness")).status == 200


async def test_body_limit_is_configurable(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client(service={"max_request_body_bytes": 2048})
    cid = await new_conversation(client.app)
    assert (await post(client, body_for(cid, user_feedback="x" * 1500)))[0] == 200
    status, answer = await post(client, body_for(cid, user_feedback="x" * 2048))
    assert status == 413 and "2048" in answer["detail"]["cause"]

    async def chunks() -> Any:  # no Content-Length: the limit holds while streaming too
        data = json.dumps(body_for(cid, user_feedback="y" * 4000)).encode()
        for i in range(0, len(data), 512):
            yield data[i : i + 512]

    resp = await client.post("/v1/feedback", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert len(stored(client)) == 1


# ------------------------------------------------------------------ feedback status


@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_feedback_status_get_and_put(make_client: MakeClient, prefix: str) -> None:
    client = await make_client()
    resp = await client.get(f"{prefix}/feedback/status")
    assert resp.status == 200
    assert await resp.json() == {"functionality": "feedback", "status": {"enabled": True}}

    resp = await client.put(f"{prefix}/feedback/status?user_id=admin", json={"status": False})
    assert resp.status == 200
    answer = await resp.json()
    assert list(answer) == ["status"]
    status = answer["status"]
    assert set(status) == {"previous_status", "updated_status", "updated_by", "timestamp"}
    assert status["previous_status"] is True and status["updated_status"] is False
    assert status["updated_by"] == "admin"
    assert ISO_UTC.fullmatch(status["timestamp"])

    resp = await client.get(f"{prefix}/feedback/status")
    assert await resp.json() == {"functionality": "feedback", "status": {"enabled": False}}

    resp = await client.put(f"{prefix}/feedback/status", json={"status": True})
    status = (await resp.json())["status"]
    assert (status["previous_status"], status["updated_status"], status["updated_by"]) == (False, True, DEFAULT_USER)


async def test_disabling_feedback_stops_posts(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    await client.put("/v1/feedback/status", json={"status": False})
    status, answer = await post(client, body_for(cid))
    assert status == 403 and answer["detail"]["response"] == "Storing feedback is disabled"
    await client.put("/v1/feedback/status", json={"status": True})
    assert (await post(client, body_for(cid)))[0] == 200


async def test_enabling_feedback_over_config(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client(user_data_collection={"feedback_enabled": False})
    resp = await client.put("/v1/feedback/status", json={"status": True})
    assert (await resp.json())["status"]["previous_status"] is False
    cid = await new_conversation(client.app)
    assert (await post(client, body_for(cid)))[0] == 200


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": True, "extra": 1}, [("extra_forbidden", ["body", "extra"])]),
        ({}, [("missing", ["body", "status"])]),
        ({"enabled": False}, [("extra_forbidden", ["body", "enabled"]), ("missing", ["body", "status"])]),
        ({"status": "false"}, [("bool_type", ["body", "status"])]),
        ({"status": 0}, [("bool_type", ["body", "status"])]),
        ({"status": None}, [("bool_type", ["body", "status"])]),
        ([True], [("model_attributes_type", ["body"])]),
    ],
)
async def test_put_status_validation(make_client: MakeClient, body: Any, expected: list[tuple[str, list[Any]]]) -> None:
    client = await make_client()
    resp = await client.put("/v1/feedback/status", json=body)
    assert resp.status == 422
    detail = (await resp.json())["detail"]
    assert [(e["type"], e["loc"]) for e in detail] == expected
    resp = await client.get("/v1/feedback/status")
    assert (await resp.json())["status"]["enabled"] is True


async def test_put_status_malformed_json(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.put("/v1/feedback/status", data=b"{status: true}", headers={"Content-Type": "application/json"})
    assert resp.status == 422
    assert (await resp.json())["detail"][0]["type"] == "json_invalid"


async def test_flag_survives_restart_and_is_shared(make_client: MakeClient, new_conversation: NewConversation) -> None:
    first = await make_client()
    second = await make_client()  # another process would see the same: same directories
    resp = await first.put("/v1/feedback/status", json={"status": False})
    assert resp.status == 200
    assert (await (await second.get("/v1/feedback/status")).json())["status"]["enabled"] is False
    cid = await new_conversation(second.app)
    assert (await post(second, body_for(cid)))[0] == 403

    await first.close()
    await second.close()
    restarted = await make_client()
    assert (await (await restarted.get("/v1/feedback/status")).json())["status"]["enabled"] is False
    resp = await restarted.put("/v1/feedback/status", json={"status": True})
    assert (await resp.json())["status"]["previous_status"] is False


async def test_conversation_owner_survives_restart(make_client: MakeClient, new_conversation: NewConversation) -> None:
    first = await make_client()
    cid = await new_conversation(first.app, "alice")
    await first.close()
    again = await make_client()
    assert (await post(again, body_for(cid), path="/v1/feedback?user_id=alice"))[0] == 200
    assert (await post(again, body_for(cid), path="/v1/feedback?user_id=bob"))[0] == 403


def rename_table(app: web.Application, table: str, new: str) -> None:
    """Break (or mend) the filesystem store's state database under the running service."""
    state = storage_from(app).state_root  # type: ignore[attr-defined]
    with sqlite3.connect(state / "state.sqlite3") as conn:
        conn.execute(f"ALTER TABLE {table} RENAME TO {new}")


async def test_a_failing_flag_read_is_a_clear_error_and_heals(
    make_client: MakeClient, new_conversation: NewConversation
) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    await client.put("/v1/feedback/status", json={"status": True})
    rename_table(client.app, "flags", "flags_away")  # the state database fails to read the flag
    for resp in (await client.get("/v1/feedback/status"), await client.post("/v1/feedback", json=body_for(cid))):
        assert resp.status == 500
        detail = (await resp.json())["detail"]
        assert detail["response"] == "Failed to read feedback status"
        assert "state database" in detail["cause"]
    rename_table(client.app, "flags_away", "flags")
    assert (await client.put("/v1/feedback/status", json={"status": True})).status == 200
    assert (await post(client, body_for(cid)))[0] == 200


async def test_a_failing_owner_lookup_is_503(make_client: MakeClient, new_conversation: NewConversation) -> None:
    first = await make_client()
    cid = await new_conversation(first.app)
    await first.close()
    client = await make_client()  # a fresh process: the owner is not remembered
    rename_table(client.app, "owners", "owners_away")
    status, answer = await post(client, body_for(cid))
    assert status == 503
    assert answer["detail"]["response"] == "Unable to access conversation storage"
    assert "state database" in answer["detail"]["cause"]
    assert stored(client) == []
    rename_table(client.app, "owners_away", "owners")
    assert (await post(client, body_for(cid)))[0] == 200


async def test_put_status_refuses_to_enable_feedback_without_storage(make_client: MakeClient) -> None:
    client = await make_client(user_data_collection={"feedback_enabled": False, "feedback_storage": None})
    resp = await client.put("/v1/feedback/status", json={"status": True})
    assert resp.status == 409
    assert (await resp.json())["detail"]["response"] == "Cannot enable feedback"
    status = await (await client.get("/v1/feedback/status")).json()
    assert status["status"]["enabled"] is False
    # Disabling is always possible.
    assert (await client.put("/v1/feedback/status", json={"status": False})).status == 200


async def test_an_upper_case_conversation_id_names_the_same_conversation(
    make_client: MakeClient, new_conversation: NewConversation
) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    resp = await client.post("/v1/feedback", json=body_for(cid.upper()))
    assert resp.status == 200, await resp.json()
    assert [r["conversation_id"] for r in stored(client)] == [cid]
