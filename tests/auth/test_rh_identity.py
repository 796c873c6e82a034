"""``rh-identity``: every identity type, missing, malformed and oversized headers, entitlements."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.auth.auth_support import rh_header, rh_user


def rh_auth(**config: Any) -> dict[str, Any]:
    return {"module": "rh-identity", "rh_identity_config": config}


async def who(client: Any, header: str | None) -> tuple[int, Any]:
    headers = {"x-rh-identity": header} if header is not None else {}
    resp = await client.post("/authorized", headers=headers)
    return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("identity", "user_id", "username"),
    [
        (rh_user("u-1", "jdoe"), "u-1", "jdoe"),
        (
            {"type": "ServiceAccount", "org_id": "1", "service_account": {"client_id": "c-9", "username": "svc-sa"}},
            "c-9",
            "svc-sa",
        ),
        ({"type": "System", "org_id": "1", "account_number": "5555", "system": {"cn": "cn-host"}}, "cn-host", "5555"),
        ({"type": "System", "org_id": "1", "account_number": "", "system": {"cn": "cn-host"}}, "cn-host", "cn-host"),
    ],
    ids=["User", "ServiceAccount", "System", "System without account"],
)
async def test_identity_types(make_client: Any, identity: dict[str, Any], user_id: str, username: str) -> None:
    client = await make_client(authentication=rh_auth())
    status, body = await who(client, rh_header(identity))
    assert (status, body) == (200, {"user_id": user_id, "username": username, "skip_userid_check": False})


def b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("header", "status", "detail"),
    [
        (None, 401, "Missing x-rh-identity header"),
        ("", 401, "Missing x-rh-identity header"),
        ("%%%not-base64%%%", 400, "Invalid base64 encoding in x-rh-identity header"),
        (b64(b"\xff\xfe"), 400, "Invalid base64 encoding in x-rh-identity header"),
        (b64(b"{not json"), 400, "Invalid JSON in x-rh-identity header"),
        (b64([1, 2]), 400, "Invalid identity data"),
        (b64({"identity": None}), 400, "Invalid identity data"),
        (b64({"identity": {"type": "Alien"}}), 400, "Invalid identity data"),
        (b64({"identity": {"type": "User", "user": {"user_id": "u"}}}), 400, "Invalid identity data"),
        (b64({"identity": {"type": "User", "user": {"user_id": 7, "username": "x"}}}), 400, "Invalid identity data"),
        (b64({"identity": {"type": "User", "user": {"user_id": " ", "username": "x"}}}), 400, "Invalid identity data"),
        (
            b64({"identity": {"type": "User", "user": {"user_id": "a\nb", "username": "x"}}}),
            400,
            "Invalid identity data",
        ),
        (b64({"identity": {"type": "System", "system": {"cn": "c"}}}), 400, "Invalid identity data"),
        (
            b64({"identity": {"type": "ServiceAccount", "service_account": {"client_id": "c"}}}),
            400,
            "Invalid identity data",
        ),
        (b64({"identity": {**rh_user(), "org_id": 12}}), 400, "Invalid identity data"),
        (b64({"identity": rh_user("x" * 300)}), 400, "Invalid identity data"),
    ],
)
async def test_bad_headers(make_client: Any, header: str | None, status: int, detail: str) -> None:
    client = await make_client(authentication=rh_auth())
    assert await who(client, header) == (status, {"detail": detail})


async def test_oversized_header(make_client: Any) -> None:
    client = await make_client(authentication=rh_auth(max_header_size=64))
    header = rh_header(rh_user())
    assert len(header) > 64
    assert await who(client, header) == (400, {"detail": "x-rh-identity header exceeds maximum allowed size"})


async def test_required_entitlements(make_client: Any) -> None:
    client = await make_client(authentication=rh_auth(required_entitlements=["rhel", "ansible"]))
    both = {"rhel": {"is_entitled": True}, "ansible": {"is_entitled": True}}
    assert (await who(client, rh_header(rh_user(), both)))[0] == 200
    for entitlements in ({"rhel": {"is_entitled": True}}, {**both, "ansible": {"is_entitled": False}}, None):
        assert await who(client, rh_header(rh_user(), entitlements)) == (403, {"detail": "Insufficient entitlements"})


async def test_without_section_defaults_apply(make_client: Any) -> None:
    client = await make_client(authentication={"module": "rh-identity"})
    assert (await who(client, rh_header(rh_user())))[0] == 200
