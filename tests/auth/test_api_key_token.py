"""``api-key-token``: the bearer token must be the key (from the file, ``${env.NAME}`` or a key file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import lightspeed.auth.api_key
from lightspeed.config import parse_config
from lightspeed.errors import ConfigError


async def test_the_key_admits_and_anything_else_is_401(make_client: Any) -> None:
    client = await make_client(authentication={"module": "api-key-token", "api_key_config": {"api_key": "s3cr3t-k"}})
    resp = await client.post("/authorized", headers={"Authorization": "Bearer s3cr3t-k"})
    assert resp.status == 200
    assert await resp.json() == {
        "user_id": "00000000-0000-0000-0000-000",
        "username": "lightspeed-user",
        "skip_userid_check": True,
    }
    for token in ("s3cr3t", "s3cr3t-k2", "S3CR3T-K", "é"):
        resp = await client.post("/authorized", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401 and await resp.json() == {"detail": "Invalid API Key"}
    resp = await client.post("/authorized")
    assert resp.status == 401
    assert (await resp.json())["detail"]["cause"] == "No Authorization header found"


def test_key_from_the_environment() -> None:
    config = parse_config(
        {"authentication": {"module": "api-key-token", "api_key_config": {"api_key": "${env.LS_KEY}"}}},
        env={"LS_KEY": "from-env"},
    )
    assert config.authentication.api_key_config is not None
    assert config.authentication.api_key_config.api_key == "from-env"
    with pytest.raises(ConfigError, match="api_key_config: required when module is api-key-token"):
        parse_config({"authentication": {"module": "api-key-token"}}, env={})


async def test_key_file_is_reread_when_it_changes(
    make_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("first-key\n")
    monkeypatch.setattr(lightspeed.auth.api_key, "KEY_FILE_CHECK_SECONDS", 0.0)
    client = await make_client(
        authentication={"module": "api-key-token", "api_key_config": {"api_key_path": str(key_file)}}
    )
    assert (await client.post("/authorized", headers={"Authorization": "Bearer first-key"})).status == 200
    key_file.write_text("second-key-longer\n")
    os.utime(key_file, ns=(1, 1))
    assert (await client.post("/authorized", headers={"Authorization": "Bearer first-key"})).status == 401
    assert (await client.post("/authorized", headers={"Authorization": "Bearer second-key-longer"})).status == 200
    key_file.unlink()  # a missing file keeps the key held
    assert (await client.post("/authorized", headers={"Authorization": "Bearer second-key-longer"})).status == 200


def test_key_path_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api_key_path: file .* does not exist"):
        parse_config(
            {"authentication": {"module": "api-key-token", "api_key_config": {"api_key_path": str(tmp_path / "x")}}},
            env={},
        )
    with pytest.raises(ConfigError, match="give either api_key or api_key_path"):
        parse_config(
            {"authentication": {"module": "api-key-token", "api_key_config": {"api_key": "a", "api_key_path": "/x"}}},
            env={},
        )
