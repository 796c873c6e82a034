"""Helpers for the authentication tests: signing keys, tokens, a JWKS endpoint, identity headers."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import attrs
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@attrs.define
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        data: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        data.update(kid=self.kid, use="sig")
        if with_alg:
            data["alg"] = self.alg
        return data

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **headers})


def rsa_key(kid: str = "rsa-1", alg: str = "RS256") -> SigningKey:
    return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str = "ec-1") -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"user_id": "u-123", "username": "alice", "iat": now, "exp": now + 600, **extra}


@attrs.define
class JwksServer:
    """A JWKS endpoint on 127.0.0.1: ``keys`` is what it serves; ``fetches`` counts requests."""

    url: str = ""
    keys: list[dict[str, Any]] = attrs.field(factory=list)
    fetches: int = 0
    status: int = 200
    raw: bytes | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.raw is not None:
            return web.Response(body=self.raw, status=self.status, content_type="application/json")
        return web.json_response({"keys": self.keys}, status=self.status)


def rh_header(identity: dict[str, Any], entitlements: dict[str, Any] | None = None) -> str:
    data: dict[str, Any] = {"identity": identity}
    if entitlements is not None:
        data["entitlements"] = entitlements
    return base64.b64encode(json.dumps(data).encode()).decode()


def rh_user(user_id: str = "rh-user-1", username: str = "rhuser", **extra: Any) -> dict[str, Any]:
    return {"type": "User", "org_id": "12345", "user": {"user_id": user_id, "username": username}, **extra}
