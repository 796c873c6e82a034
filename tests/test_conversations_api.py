"""``/v1/conversations`` and ``/v2/conversations`` against the real app, on every backend that
implements conversation listing: shapes, status codes and texts as the Lightspeed Core Stack
words them, other users' conversations (reachable on v1 with no access rules, as upstream; owner-only
under rules without the ``*_other_conversations`` actions, and on v2 always), paging, and deletion
with the pending records."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from lightspeed.records import RecordKind, hash_user_id
from lightspeed.state import storage_from
from tests.fakes import OWNERS_ONLY

Client = TestClient[web.Request, web.Application]

ALICE, BOB = "alice", "bob"
ECHO = {
    "llm_providers": [{"name": "local", "type": "echo", "models": ["echo"]}],
    "inference": {"default_provider": "local", "default_model": "echo"},
}
BACKENDS = ["filesystem", "sqlite", "memory"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client_for(make_client: Any, backend: str, tmp_path: Path) -> Any:
    async def make(authorization: dict[str, Any] | None = None, **udc: Any) -> Client:
        """``authorization``: the section, if any (without it every caller may use others' conversations)."""
        options = {
            "filesystem": {},
            "sqlite": {"path": str(tmp_path / "store.sqlite3")},
            "memory": {"store": str(tmp_path)},
        }[backend]
        sections: dict[str, Any] = dict(ECHO) if authorization is None else {**ECHO, "authorization": authorization}
        client: Client = await make_client(
            user_data_collection={"storage": {"backend": backend, "options": options}, **udc}, **sections
        )
        return client

    return make


async def ask(client: Client, user: str, query: str = "What is a pod?", conversation_id: str | None = None) -> str:
    body: dict[str, Any] = {"query": query}
    if conversation_id:
        body["conversation_id"] = conversation_id
    resp = await client.post("/v1/query", params={"user_id": user}, json=body)
    assert resp.status == 200, await resp.text()
    cid: str = (await resp.json())["conversation_id"]
    return cid


async def call(client: Client, method: str, path: str, user: str = ALICE, **kw: Any) -> tuple[int, Any]:
    resp = await client.request(method, path, params={"user_id": user, **kw.pop("params", {})}, **kw)
    return resp.status, await resp.json()


async def test_lists_have_the_upstream_item_shapes(client_for: Any) -> None:
    client = await client_for(authorization=OWNERS_ONLY)
    first = await ask(client, ALICE, "one")
    await ask(client, ALICE, "two", first)
    second = await ask(client, ALICE, "three")
    await ask(client, BOB, "not alice's")

    status, body = await call(client, "GET", "/v1/conversations")
    assert status == 200
    assert [c["conversation_id"] for c in body["conversations"]] == [second, first]
    item = body["conversations"][1]
    assert set(item) == {
        "conversation_id",
        "created_at",
        "last_message_at",
        "message_count",
        "last_used_model",
        "last_used_provider",
        "topic_summary",
    }
    assert (item["message_count"], item["last_used_model"], item["last_used_provider"]) == (2, "echo", "local")
    assert item["topic_summary"] is None
    assert datetime.fromisoformat(item["created_at"]) <= datetime.fromisoformat(item["last_message_at"])

    status, body = await call(client, "GET", "/v2/conversations")
    assert status == 200
    assert [set(c) for c in body["conversations"]] == [
        {"conversation_id", "topic_summary", "last_message_timestamp"}
    ] * 2
    assert [c["conversation_id"] for c in body["conversations"]] == [second, first]
    assert all(isinstance(c["last_message_timestamp"], float) for c in body["conversations"])

    status, body = await call(client, "GET", "/v1/conversations", user="carol")
    assert (status, body) == (200, {"conversations": []})


async def test_paging_with_limit_and_offset(client_for: Any) -> None:
    client = await client_for()
    ids = [await ask(client, ALICE, f"question {i}") for i in range(5)]
    newest_first = list(reversed(ids))
    seen = []
    for offset in (0, 2, 4):
        resp = await client.get("/v1/conversations", params={"user_id": ALICE, "limit": "2", "offset": str(offset)})
        assert resp.status == 200
        assert resp.headers["X-Total-Count"] == "5"
        seen += [c["conversation_id"] for c in (await resp.json())["conversations"]]
    assert seen == newest_first
    status, body = await call(client, "GET", "/v2/conversations", params={"offset": "3"})
    assert [c["conversation_id"] for c in body["conversations"]] == newest_first[3:]
    status, body = await call(client, "GET", "/v1/conversations", params={"limit": "0", "offset": "x"})
    assert status == 422
    assert body["detail"] == [
        {
            "type": "greater_than_equal",
            "loc": ["query", "limit"],
            "msg": "Input should be greater than or equal to 1",
            "input": "0",
            "ctx": {"ge": 1},
        },
        {
            "type": "int_parsing",
            "loc": ["query", "offset"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "x",
        },
    ]


async def test_get_returns_the_chat_history_in_the_upstream_shape(client_for: Any) -> None:
    client = await client_for()
    cid = await ask(client, ALICE, "first question")
    resp = await client.post(
        "/v1/query", params={"user_id": ALICE}, json={"query": "second question", "conversation_id": cid}
    )
    answer = (await resp.json())["response"]
    for version in ("v1", "v2"):
        status, body = await call(client, "GET", f"/{version}/conversations/{cid}")
        assert status == 200
        assert body["conversation_id"] == cid
        assert len(body["chat_history"]) == 2
        turn = body["chat_history"][1]
        assert turn["messages"] == [
            {"content": "second question", "type": "user", "referenced_documents": None},
            {"content": answer, "type": "assistant", "referenced_documents": None},
        ]
        assert (turn["provider"], turn["model"], turn["tool_calls"], turn["tool_results"]) == ("local", "echo", [], [])
        assert datetime.fromisoformat(turn["started_at"]) <= datetime.fromisoformat(turn["completed_at"])


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_another_users_conversation_is_403_on_v1_and_404_on_v2(client_for: Any, method: str) -> None:
    client = await client_for(authorization=OWNERS_ONLY)
    cid = await ask(client, BOB)
    body = {"topic_summary": "mine now"} if method == "PUT" else None
    verb = "read" if method == "GET" else "update"
    status, answer = await call(client, method, f"/v1/conversations/{cid}", json=body)
    assert (status, answer) == (
        403,
        {
            "detail": {
                "response": "User does not have permission to perform this action",
                "cause": f"User {ALICE} does not have permission to {verb} conversation with ID {cid}",
            }
        },
    )
    status, answer = await call(client, method, f"/v2/conversations/{cid}", json=body)
    assert (status, answer) == (
        404,
        {"detail": {"response": "Conversation not found", "cause": f"Conversation with ID {cid} does not exist"}},
    )
    info = await storage_from(client.app).get_conversation(cid)
    assert info is not None and info.topic_summary is None


async def test_without_access_rules_anyone_may_use_anyones_conversation_on_v1(client_for: Any) -> None:
    """The Lightspeed Core Stack's default: with no authorization section every caller has the
    ``*_other_conversations`` actions, so on v1 Bob lists, reads, continues, renames and deletes
    Alice's conversation. v2 keeps to the caller's own, as the upstream's v2 does."""
    client = await client_for()
    cid = await ask(client, ALICE, "alice's question")
    await ask(client, ALICE, "alice's own other conversation")

    status, body = await call(client, "GET", "/v1/conversations", user=BOB)
    assert status == 200 and cid in [c["conversation_id"] for c in body["conversations"]]
    assert len(body["conversations"]) == 2
    status, body = await call(client, "GET", f"/v1/conversations/{cid}", user=BOB)
    assert status == 200
    assert body["chat_history"][0]["messages"][0]["content"] == "alice's question"
    assert await ask(client, BOB, "bob carries on", cid) == cid
    status, body = await call(client, "PUT", f"/v1/conversations/{cid}", user=BOB, json={"topic_summary": "Bob's"})
    assert status == 200 and body["success"] is True
    info = await storage_from(client.app).get_conversation(cid)
    assert info is not None and info.topic_summary == "Bob's" and info.owner == hash_user_id(ALICE)
    _, body = await call(client, "GET", f"/v1/conversations/{cid}")
    assert [t["messages"][0]["content"] for t in body["chat_history"]] == ["alice's question", "bob carries on"]

    status, body = await call(client, "GET", "/v2/conversations", user=BOB)
    assert (status, body) == (200, {"conversations": []})
    for method, json_body in (("GET", None), ("PUT", {"topic_summary": "v2"})):
        status, body = await call(client, method, f"/v2/conversations/{cid}", user=BOB, json=json_body)
        assert (status, body["detail"]["response"]) == (404, "Conversation not found")
    status, body = await call(client, "DELETE", f"/v2/conversations/{cid}", user=BOB)
    assert (status, body["deleted"]) == (200, False)

    status, body = await call(client, "DELETE", f"/v1/conversations/{cid}", user=BOB)
    assert (status, body["deleted"]) == (200, True)
    assert await storage_from(client.app).get_conversation(cid) is None


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_unknown_and_malformed_ids(client_for: Any, method: str, version: str) -> None:
    client = await client_for()
    body = {"topic_summary": "x"} if method == "PUT" else None
    unknown = "123e4567-e89b-12d3-a456-426614174000"
    status, answer = await call(client, method, f"/{version}/conversations/{unknown}", json=body)
    assert (status, answer["detail"]["response"]) == (404, "Conversation not found")
    status, answer = await call(client, method, f"/{version}/conversations/not-an-id", json=body)
    assert (status, answer) == (
        400,
        {
            "detail": {
                "response": "Invalid conversation ID format",
                "cause": "The conversation ID not-an-id has invalid format.",
            }
        },
    )


async def test_the_upstream_id_forms_name_the_same_conversation(client_for: Any) -> None:
    client = await client_for()
    cid = await ask(client, ALICE)
    for form in (cid.upper(), cid.replace("-", ""), f"urn:uuid:{cid}"):
        status, body = await call(client, "GET", f"/v1/conversations/{form}")
        assert (status, body.get("conversation_id")) == (200, cid), (form, body)


async def test_delete_removes_the_conversation_and_its_pending_records(client_for: Any) -> None:
    client = await client_for()
    cid = await ask(client, ALICE)
    await ask(client, ALICE, "again", cid)
    keep = await ask(client, ALICE, "another conversation")
    resp = await client.post(
        "/v1/feedback",
        params={"user_id": ALICE},
        json={"conversation_id": cid, "user_question": "q", "llm_response": "r", "sentiment": 1},
    )
    assert resp.status == 200
    status, body = await call(client, "DELETE", f"/v1/conversations/{cid}")
    assert (status, body) == (
        200,
        {
            "conversation_id": cid,
            "success": True,
            "response": "Conversation deleted successfully",
            "deleted": True,
            "deleted_records": {"transcripts": 2, "feedback": 1, "in_flight": 0},
        },
    )
    assert (await call(client, "GET", f"/v1/conversations/{cid}"))[0] == 404
    _, listed = await call(client, "GET", "/v1/conversations")
    assert [c["conversation_id"] for c in listed["conversations"]] == [keep]
    stats = await storage_from(client.app).pending_stats()
    assert (stats.records[RecordKind.TRANSCRIPT], stats.records[RecordKind.FEEDBACK]) == (1, 0)
    status, body = await call(client, "DELETE", f"/v2/conversations/{cid}")
    assert (status, body) == (
        200,
        {"conversation_id": cid, "success": True, "response": "Conversation not found", "deleted": False},
    )


async def test_delete_can_keep_the_pending_records(client_for: Any) -> None:
    client = await client_for(delete_pending_with_conversation=False)
    cid = await ask(client, ALICE)
    status, body = await call(client, "DELETE", f"/v2/conversations/{cid}")
    assert (status, body) == (
        200,
        {"conversation_id": cid, "success": True, "response": "Conversation deleted successfully", "deleted": True},
    )
    stats = await storage_from(client.app).pending_stats()
    assert stats.records[RecordKind.TRANSCRIPT] == 1


async def test_deleting_another_users_conversation(client_for: Any) -> None:
    client = await client_for(authorization=OWNERS_ONLY)
    cid = await ask(client, BOB)
    status, body = await call(client, "DELETE", f"/v1/conversations/{cid}")
    assert (status, body["detail"]["cause"]) == (
        403,
        f"User {ALICE} does not have permission to delete conversation with ID {cid}",
    )
    status, body = await call(client, "DELETE", f"/v2/conversations/{cid}")
    assert (status, body["deleted"]) == (200, False)
    assert await storage_from(client.app).get_conversation_owner(cid) == hash_user_id(BOB)
    assert (await storage_from(client.app).pending_stats()).records[RecordKind.TRANSCRIPT] == 1


async def test_put_sets_the_topic_summary(client_for: Any) -> None:
    client = await client_for()
    cid = await ask(client, ALICE)
    status, body = await call(client, "PUT", f"/v1/conversations/{cid}", json={"topic_summary": "Pods explained"})
    assert (status, body) == (
        200,
        {"conversation_id": cid, "success": True, "message": "Topic summary updated successfully"},
    )
    _, listed = await call(client, "GET", "/v2/conversations")
    assert listed["conversations"][0]["topic_summary"] == "Pods explained"
    status, body = await call(client, "PUT", f"/v2/conversations/{cid}", json={"topic_summary": "Renamed"})
    assert status == 200
    _, listed = await call(client, "GET", "/v1/conversations")
    assert listed["conversations"][0]["topic_summary"] == "Renamed"


async def test_put_validates_its_body(client_for: Any) -> None:
    client = await client_for()
    cid = await ask(client, ALICE)
    status, body = await call(client, "PUT", f"/v1/conversations/{cid}", json={"topic_summary": "", "extra": 1})
    assert status == 422
    assert [(e["type"], e["loc"]) for e in body["detail"]] == [
        ("extra_forbidden", ["body", "extra"]),
        ("string_too_short", ["body", "topic_summary"]),
    ]
    status, body = await call(client, "PUT", f"/v1/conversations/{cid}", json={"topic_summary": "x" * 1001})
    assert (status, body["detail"][0]["type"]) == (422, "string_too_long")
    status, body = await call(client, "PUT", f"/v1/conversations/{cid}", json={})
    assert (status, body["detail"][0]["type"]) == (422, "missing")
