"""``jwk-token`` against a real JWKS server on 127.0.0.1, with keys made per test (RSA and EC)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from lightspeed.auth.jwk import JwkTokenAuth
from lightspeed.state import auth_from
from tests.auth.auth_support import JwksServer, SigningKey, claims, ec_key, rsa_key
from tests.fakes import MakeClient

UNAUTHORIZED = "Missing or invalid credentials provided by client"


def jwk_auth(jwks: JwksServer, **extra: Any) -> dict[str, Any]:
    jwt_configuration = extra.pop("jwt_configuration", {})
    return {"module": "jwk-token", "jwk_config": {"url": jwks.url, "jwt_configuration": jwt_configuration, **extra}}


async def authorized(client: Any, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    resp = await client.post("/authorized", headers=headers)
    return resp.status, await resp.json()


def cause(body: Any) -> str:
    assert body["detail"]["response"] == UNAUTHORIZED
    return str(body["detail"]["cause"])


@pytest.mark.parametrize("make_key", [rsa_key, ec_key], ids=["RS256", "ES256"])
async def test_a_signed_token_names_the_user(jwks: JwksServer, make_client: Any, make_key: Any) -> None:
    key: SigningKey = make_key()
    jwks.keys = [key.jwk()]
    client = await make_client(authentication=jwk_auth(jwks))
    status, body = await authorized(client, key.sign(claims()))
    assert (status, body) == (200, {"user_id": "u-123", "username": "alice", "skip_userid_check": False})


async def test_oidc_token_with_sub_and_preferred_username(jwks: JwksServer, make_client: Any) -> None:
    """The defaults are the upstream's (user_id, username): a standard OIDC token needs the claims named."""
    key = ec_key()
    jwks.keys = [key.jwk()]
    oidc = {"sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "preferred_username": "alice", "exp": time.time() + 60}
    client = await make_client(authentication=jwk_auth(jwks))
    status, body = await authorized(client, key.sign(oidc))
    assert status == 401 and cause(body) == "Token missing claim: user_id"
    configured = jwk_auth(jwks, jwt_configuration={"user_id_claim": "sub", "username_claim": "preferred_username"})
    client = await make_client(authentication=configured)
    status, body = await authorized(client, key.sign(oidc))
    assert status == 200 and body["user_id"] == oidc["sub"] and body["username"] == "alice"


async def test_rejected_tokens(jwks: JwksServer, make_client: Any) -> None:
    key, other = rsa_key("k1"), rsa_key("k1")  # the same kid, a different key
    jwks.keys = [key.jwk()]
    client = await make_client(authentication=jwk_auth(jwks))
    now = int(time.time())
    good = key.sign(claims())
    header, _payload, signature = good.split(".")
    forged_payload = jwt.utils.base64url_encode(b'{"user_id":"admin","username":"admin"}').decode()
    none_token = jwt.encode(claims(), "", algorithm="none", headers={"kid": "k1"})
    cases = {
        "expired": (key.sign(claims(exp=now - 120)), "Token has expired"),
        "not yet valid": (key.sign(claims(nbf=now + 600)), "Token validation failed"),
        "wrong key": (other.sign(claims()), "Invalid token signature"),
        "tampered payload": (f"{header}.{forged_payload}.{signature}", "Invalid token signature"),
        "alg none": (none_token, "Token signed by unknown key"),
        "HMAC (algorithm confusion)": (
            jwt.encode(claims(), "a-shared-secret-of-32-bytes-long", algorithm="HS256", headers={"kid": "k1"}),
            "Token signed by unknown key",
        ),
        "missing username": (key.sign({"user_id": "u", "exp": now + 60}), "Token missing claim: username"),
        "garbage": ("not.a.jwt", "Token could not be decoded"),
        "unknown kid": (rsa_key("k9").sign(claims()), "Token signed by unknown key"),
    }
    for name, (token, expected) in cases.items():
        status, body = await authorized(client, token)
        assert (name, status, cause(body)) == (name, 401, expected)
    status, body = await authorized(client, None)
    assert status == 401 and cause(body) == "No Authorization header found"
    resp = await client.post("/authorized", headers={"Authorization": "Basic abc"})
    assert resp.status == 401 and cause(await resp.json()) == "No token found in Authorization header"


async def test_a_rotated_key_is_fetched_at_most_once_a_minute(jwks: JwksServer, make_client: Any) -> None:
    old, new = ec_key("2024"), ec_key("2025")
    jwks.keys = [old.jwk()]
    client = await make_client(authentication=jwk_auth(jwks))
    module = auth_from(client.app)
    assert isinstance(module, JwkTokenAuth)
    now = [1000.0]
    module.key_set.clock = lambda: now[0]
    assert (await authorized(client, old.sign(claims())))[0] == 200
    assert jwks.fetches == 1
    jwks.keys = [old.jwk(), new.jwk()]  # the provider rotates
    now[0] += 10
    status, body = await authorized(client, new.sign(claims()))
    assert status == 401 and cause(body) == "Token signed by unknown key"  # too soon since the last fetch
    assert jwks.fetches == 1
    now[0] += 60
    assert (await authorized(client, new.sign(claims())))[0] == 200  # the unknown kid triggers one fetch
    assert jwks.fetches == 2
    for i in range(5):  # made-up kids within the minute cost nothing
        assert (await authorized(client, ec_key(f"bogus-{i}").sign(claims())))[0] == 401
    assert jwks.fetches == 2
    assert (await authorized(client, old.sign(claims())))[0] == 200  # the cache still serves


async def test_key_server_failures(jwks: JwksServer, make_client: Any) -> None:
    key = ec_key()
    client = await make_client(authentication=jwk_auth(jwks))
    module = auth_from(client.app)
    assert isinstance(module, JwkTokenAuth)
    now = [1000.0]
    module.key_set.clock = lambda: now[0]
    jwks.status = 500
    status, body = await authorized(client, key.sign(claims()))
    assert status == 401 and cause(body) == "Unable to reach authentication key server"
    jwks.status, jwks.raw = 200, b"<html>"
    now[0] += 10
    status, body = await authorized(client, key.sign(claims()))
    assert status == 401 and cause(body) == "Authentication key server returned invalid data"
    jwks.raw = None
    jwks.keys = [key.jwk()]
    now[0] += 10
    assert (await authorized(client, key.sign(claims())))[0] == 200
    jwks.status = 503  # once held, keys outlive a failing refresh
    now[0] += 7200
    assert (await authorized(client, key.sign(claims())))[0] == 200


async def test_a_key_without_alg_serves_any_allowed_algorithm_of_its_type(jwks: JwksServer, make_client: Any) -> None:
    key = rsa_key("k", alg="RS384")
    jwks.keys = [key.jwk(with_alg=False)]
    client = await make_client(authentication=jwk_auth(jwks))
    assert (await authorized(client, key.sign(claims())))[0] == 200
    key_ps = rsa_key("k2", alg="PS256")
    jwks.keys = [key_ps.jwk(with_alg=True) | {"alg": "RS256"}]  # the set says RS256, the token PS256
    client = await make_client(authentication=jwk_auth(jwks))
    status, body = await authorized(client, key_ps.sign(claims()))
    assert status == 401 and cause(body) == "Token signed by unknown key"


async def test_issuer_and_audience(jwks: JwksServer, make_client: Any) -> None:
    key = ec_key()
    jwks.keys = [key.jwk()]
    auth = jwk_auth(jwks, issuer="https://sso.example.com/realms/a", audience=["lightspeed", "console"])
    client = await make_client(authentication=auth)
    iss = "https://sso.example.com/realms/a"
    assert (await authorized(client, key.sign(claims(iss=iss, aud="console"))))[0] == 200
    status, body = await authorized(client, key.sign(claims(iss="https://evil.example.com", aud="console")))
    assert status == 401 and cause(body) == "Token issuer is not accepted"
    status, body = await authorized(client, key.sign(claims(iss=iss, aud="another-app")))
    assert status == 401 and cause(body) == "Token audience is not accepted"
    status, body = await authorized(client, key.sign(claims(iss=iss)))
    assert status == 401 and cause(body) == "Token missing claim: aud"


async def test_role_rules_grant_and_deny(jwks: JwksServer, make_client: MakeClient) -> None:
    key = ec_key()
    jwks.keys = [key.jwk()]
    auth = jwk_auth(
        jwks,
        jwt_configuration={
            "role_rules": [
                {
                    "jsonpath": "$.realm_access.roles[*]",
                    "operator": "contains",
                    "value": "ls-admin",
                    "roles": ["admin"],
                },
                {"jsonpath": "$.email", "operator": "match", "value": "@redhat\\.com$", "roles": ["employee"]},
                {"jsonpath": "$.org", "operator": "in", "value": [["acme"], ["globex"]], "roles": ["customer"]},
                {"jsonpath": "$.banned", "operator": "equals", "value": [True], "roles": ["ok"], "negate": True},
            ]
        },
    )
    rules = [
        {"role": "admin", "actions": ["admin"]},
        {"role": "employee", "actions": ["query", "feedback"]},
        {"role": "customer", "actions": ["query"]},
        {"role": "ok", "actions": ["info"]},
    ]
    client = await make_client(authentication=auth, authorization={"access_rules": rules})

    async def put_status(token: str) -> int:
        resp = await client.put(
            "/v1/feedback/status", json={"status": True}, headers={"Authorization": f"Bearer {token}"}
        )
        return resp.status

    async def get(path: str, token: str) -> int:
        return (await client.get(path, headers={"Authorization": f"Bearer {token}"})).status

    admin = key.sign(claims(realm_access={"roles": ["user", "ls-admin"]}))
    employee = key.sign(claims(email="alice@redhat.com", banned=True))
    customer = key.sign(claims(org="globex", email="bob@example.com"))
    assert await put_status(admin) == 200
    resp = await client.put(
        "/v1/feedback/status", json={"status": True}, headers={"Authorization": f"Bearer {employee}"}
    )
    assert resp.status == 403
    assert await resp.json() == {
        "detail": {
            "response": "User does not have permission to access this endpoint",
            "cause": "User u-123 is not authorized to access this endpoint.",
        }
    }
    assert await put_status(customer) == 403
    assert await get("/v1/info", employee) == 403  # banned: the negated rule gives no "ok"
    assert await get("/v1/info", customer) == 200  # not banned: "ok"
    assert await get("/v1/info", admin) == 200
