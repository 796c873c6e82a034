"""The SSO and offline-token credential providers against the SSO stand-in, and the manual one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lightspeed.collector.credentials import (
    CredentialProvider,
    CredentialsError,
    ManualProvider,
    OfflineTokenProvider,
    SSOProvider,
    create_provider,
)
from lightspeed.config import DataCollectorConfig, parse_config
from lightspeed.metrics import Metrics
from tests.sso_api import SSOStandIn, start_sso


def collector_config(auth: dict[str, Any], **dc: Any) -> DataCollectorConfig:
    section = {"ingress_server_url": "http://127.0.0.1:9/upload", "ingress_content_service_name": "x", **dc}
    section["auth"] = auth
    config = parse_config({"user_data_collection": {"data_collector": section}}, env={})
    return config.user_data_collection.data_collector


@pytest.fixture
async def sso() -> AsyncIterator[SSOStandIn]:
    stand_in = await start_sso()
    try:
        yield stand_in
    finally:
        assert stand_in.server is not None
        await stand_in.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def sso_auth(sso: SSOStandIn, **over: Any) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "mode": "sso",
        "client_id": sso.client_id,
        "client_secret": sso.client_secret,
        "sso_token_url": sso.token_url,
        "access_token_url": sso.exchange_url,
        "timeout_seconds": 2,
    }
    auth.update(over)
    return auth


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_sso_trades_client_credentials_for_the_exchanged_ingress_token(
    sso: SSOStandIn, session: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    provider = create_provider(collector_config(sso_auth(sso)), session=session, metrics=metrics.collector)
    assert isinstance(provider, SSOProvider)
    creds = await provider.get()
    assert creds.token == "ingress-token-1"
    assert creds.identity_id == sso.username  # preferred_username, as the upstream derives it
    [token_call] = sso.of("token")
    assert token_call["grant_type"] == "client_credentials"
    assert token_call["client_id"] == sso.client_id
    assert token_call["scope"] == "api.console"
    assert [c["status"] for c in sso.of("exchange")] == [200]
    assert provider.status.state == "ok"
    assert metric(metrics, "lightspeed_credentials_available", mode="sso") == 1
    assert metric(metrics, "lightspeed_credentials_refreshes_total", mode="sso", outcome="success") == 1
    # Within refresh_seconds, nothing is fetched again.
    assert (await provider.get()).token == "ingress-token-1"
    assert len(sso.calls) == 2
    assert "svc-secret" not in repr(creds) and "ingress-token" not in repr(creds)


async def test_identity_is_the_configured_one_else_preferred_username_else_sub(
    sso: SSOStandIn, session: aiohttp.ClientSession
) -> None:
    configured = SSOProvider(config=collector_config(sso_auth(sso), identity_id="my-cluster"), session=session)
    assert (await configured.get()).identity_id == "my-cluster"
    sso.with_username = False
    derived = SSOProvider(config=collector_config(sso_auth(sso)), session=session)
    assert (await derived.get()).identity_id == "f2b7c1d0-sub"


async def test_sso_token_is_replaced_before_it_expires_and_the_ingress_token_on_the_interval(
    sso: SSOStandIn, session: aiohttp.ClientSession
) -> None:
    sso.expires_in = 1.0  # presented until 0.75 s after it was issued
    provider = SSOProvider(config=collector_config(sso_auth(sso, refresh_seconds=0.3)), session=session)
    assert (await provider.get()).token == "ingress-token-1"
    sso.ingress_token = "ingress-token-2"  # rotated at the source
    await asyncio.sleep(0.35)
    assert (await provider.get()).token == "ingress-token-2"  # re-exchanged on the interval
    assert len(sso.of("token")) == 1  # the SSO token was still good for it
    await asyncio.sleep(0.45)
    assert (await provider.get()).token == "ingress-token-2"
    assert len(sso.of("token")) == 2  # replaced before expiry, not after a refusal
    exchanges = sso.of("exchange")
    assert len(exchanges) == 3
    assert all(c["status"] == 200 and c["expired"] is False for c in exchanges)
    assert len({c["jti"] for c in exchanges}) == 2


async def test_a_401_from_the_ingress_refreshes_at_once(sso: SSOStandIn, session: aiohttp.ClientSession) -> None:
    provider = SSOProvider(config=collector_config(sso_auth(sso)), session=session)
    first = await provider.get()
    sso.ingress_token = "ingress-token-2"
    provider.invalidate("some-older-token")  # not the current one: nothing to do
    assert (await provider.get()).token == first.token
    provider.invalidate(first.token)
    assert (await provider.get()).token == "ingress-token-2"
    assert len(sso.of("exchange")) == 2


async def test_an_exchange_that_refuses_the_sso_token_is_retried_with_a_fresh_one(
    sso: SSOStandIn, session: aiohttp.ClientSession
) -> None:
    provider = SSOProvider(config=collector_config(sso_auth(sso)), session=session)
    sso.fail_exchange.append(401)
    assert (await provider.get()).token == "ingress-token-1"
    assert [c["status"] for c in sso.of("exchange")] == [401, 200]
    assert len(sso.of("token")) == 2
    assert provider.status.state == "ok"


async def test_bad_client_credentials_are_a_clear_error_without_the_secret(
    sso: SSOStandIn, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    metrics = Metrics()
    provider = SSOProvider(
        config=collector_config(sso_auth(sso, client_secret="wrong-secret-value")),
        session=session,
        metrics=metrics.collector,
    )
    with pytest.raises(CredentialsError) as info:
        await provider.get()
    message = str(info.value)
    assert "refused the service account's client credentials (HTTP 401, unauthorized_client)" in message
    assert "check client_id and client_secret" in message
    assert "Invalid client" not in message  # SSO's own words stay out of what we report
    assert provider.status.state == "failing"
    assert provider.status.last_error == message
    assert provider.status.to_dict()["consecutive_failures"] == 1
    assert metric(metrics, "lightspeed_credentials_available", mode="sso") == 0
    assert metric(metrics, "lightspeed_credentials_refreshes_total", mode="sso", outcome="failure") == 1
    assert sso.of("exchange") == []
    assert "wrong-secret-value" not in caplog.text
    assert any(r.levelno == logging.ERROR and "records stay pending" in r.getMessage() for r in caplog.records)


async def test_offline_token_uses_the_refresh_token_grant_of_rhsm_api(
    sso: SSOStandIn, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    token_file = tmp_path / "offline"
    token_file.write_text(sso.offline_token + "\n")
    auth = {
        "mode": "offline-token",
        "offline_token_path": str(token_file),
        "sso_token_url": sso.token_url,
        "access_token_url": sso.exchange_url,
    }
    provider = create_provider(collector_config(auth), session=session)
    assert isinstance(provider, OfflineTokenProvider)
    creds = await provider.get()
    assert (creds.token, creds.identity_id) == ("ingress-token-1", sso.username)
    [call] = sso.of("token")
    assert (call["grant_type"], call["client_id"]) == ("refresh_token", "rhsm-api")

    token_file.write_text("revoked-offline-token")
    stale = OfflineTokenProvider(config=collector_config(auth), session=session)
    with pytest.raises(CredentialsError, match=r"refused the offline token \(HTTP 400, invalid_grant\)"):
        await stale.get()


async def test_secrets_come_from_files_read_at_each_fetch(
    sso: SSOStandIn, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text("not-yet-the-secret")
    auth = sso_auth(sso, client_secret=None, client_secret_path=str(secret))
    provider = SSOProvider(config=collector_config(auth), session=session)
    with pytest.raises(CredentialsError, match="refused"):
        await provider.get()
    secret.write_text(sso.client_secret + "\n")  # the mounted secret is rotated
    assert (await provider.get()).token == "ingress-token-1"

    secret.unlink()
    gone = SSOProvider(config=collector_config(auth), session=session)
    with pytest.raises(CredentialsError, match="cannot read the SSO client secret"):
        await gone.get()


async def test_secrets_from_the_environment(sso: SSOStandIn, session: aiohttp.ClientSession) -> None:
    data = {
        "user_data_collection": {
            "data_collector": {
                "auth": sso_auth(sso, client_id="${env.CLIENT_ID}", client_secret="${env.CLIENT_SECRET}"),
            }
        }
    }
    env = {"CLIENT_ID": sso.client_id, "CLIENT_SECRET": sso.client_secret}
    config = parse_config(data, env=env).user_data_collection.data_collector
    assert (await SSOProvider(config=config, session=session).get()).token == "ingress-token-1"


async def test_sso_down_is_reported_and_a_token_never_refused_is_kept_meanwhile(
    sso: SSOStandIn, session: aiohttp.ClientSession
) -> None:
    provider = SSOProvider(config=collector_config(sso_auth(sso, refresh_seconds=0.05)), session=session)
    first = await provider.get()
    await asyncio.sleep(0.06)
    sso.fail_exchange.append(503)
    assert (await provider.get()).token == first.token  # refresh failed: the token still works
    assert provider.status.state == "stale"
    assert "answered HTTP 503" in str(provider.status.last_error)
    # Once the ingress refused it, a token is never used again.
    provider.invalidate(first.token)
    sso.fail_exchange.append(503)
    with pytest.raises(CredentialsError, match="answered HTTP 503"):
        await provider.get()
    assert provider.status.state == "failing"

    auth = sso_auth(sso)
    assert sso.server is not None
    await sso.server.close()
    closed = SSOProvider(config=collector_config(auth), session=session)
    with pytest.raises(CredentialsError, match=r"cannot reach Red Hat SSO at 127\.0\.0\.1"):
        await closed.get()


async def test_manual_token_file_is_read_for_every_upload(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    provider: CredentialProvider = ManualProvider(
        config=collector_config({}, ingress_server_auth_token_path=str(token))
    )
    assert (await provider.get()).token == "first"
    token.write_text("second")
    creds = await provider.get()
    assert (creds.token, creds.identity_id) == ("second", "lightspeed-exporter")
    token.write_text("")  # mid-rotation: the last good token is kept, and the problem reported
    assert (await provider.get()).token == "second"
    assert provider.status.state == "stale"
    assert "is empty" in str(provider.status.last_error)
    fresh = ManualProvider(config=collector_config({}, ingress_server_auth_token_path=str(token)))
    with pytest.raises(CredentialsError, match="is empty"):
        await fresh.get()


def test_auth_section_is_validated() -> None:
    from lightspeed.errors import ConfigError

    base: dict[str, Any] = {"ingress_server_url": "http://h/u", "ingress_content_service_name": "x", "enabled": True}
    cases: dict[str, dict[str, Any]] = {
        "user_data_collection.data_collector.auth.mode: must be one of manual, openshift, sso, offline-token": {
            "auth": {"mode": "kerberos"}
        },
        "user_data_collection.data_collector.auth.client_secret: required in auth.mode sso": {
            "auth": {"mode": "sso", "client_id": "a"}
        },
        "user_data_collection.data_collector.ingress_server_auth_token: not used in auth.mode openshift": {
            "auth": {"mode": "openshift"},
            "ingress_server_auth_token": "t",
        },
        "user_data_collection.data_collector.auth.kubeconfig: not used in auth.mode sso": {
            "auth": {"mode": "sso", "client_id": "a", "client_secret": "b", "kubeconfig": "/k"}
        },
        "user_data_collection.data_collector.auth.client_id_path: give either client_id or client_id_path": {
            "auth": {"mode": "sso", "client_id": "a", "client_id_path": "/a", "client_secret": "b"}
        },
    }
    for expected, dc in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config({"user_data_collection": {"data_collector": {**base, **dc}}}, env={})
        assert any(p.startswith(expected) for p in info.value.problems), (expected, info.value.problems)
    ok = parse_config(
        {"user_data_collection": {"data_collector": {**base, "auth": {"mode": "openshift"}}}}, env={}
    ).user_data_collection.data_collector
    assert ok.auth.mode == "openshift" and ok.identity_id is None
