"""Authorization: configuration checks, role rules, the start-up warning, model_override, others' conversations."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightspeed.actions import Action
from lightspeed.auth import AuthResult
from lightspeed.auth.authorization import Authorizer
from lightspeed.config import AccessRule, AuthorizationConfig, JwtRoleRule, parse_config
from lightspeed.errors import ConfigError


def rule(jsonpath: str, operator: str, value: Any, *, negate: bool = False) -> JwtRoleRule:
    return JwtRoleRule(jsonpath=jsonpath, operator=operator, value=value, roles=("r",), negate=negate)


@pytest.mark.parametrize(
    ("role_rule", "claims", "granted"),
    [
        (rule("$.groups[*]", "contains", "dev"), {"groups": ["ops", "dev"]}, True),
        (rule("$.groups[*]", "contains", "dev"), {"groups": ["ops"]}, False),
        (rule("$.groups[*]", "contains", "dev"), {}, False),
        (rule("$.org", "equals", ["acme"]), {"org": "acme"}, True),  # a JSONPath yields a list, as upstream
        (rule("$.org", "equals", "acme"), {"org": "acme"}, False),
        (rule("$.org", "in", [["acme"], ["globex"]]), {"org": "globex"}, True),
        (rule("$.org", "in", [["acme"]]), {"org": "initech"}, False),
        (rule("$.email", "match", r"@redhat\.com$"), {"email": "a@redhat.com"}, True),
        (rule("$.email", "match", r"@redhat\.com$"), {"email": "a@redhat.com.evil"}, False),
        (rule("$.email", "match", r"x"), {"email": 12}, False),
        (rule("$.org", "equals", ["acme"], negate=True), {"org": "acme"}, False),
        (rule("$.org", "equals", ["acme"], negate=True), {}, True),
        (
            rule("$.realm_access.roles[?(@ == 'admin')]", "equals", ["admin"]),
            {"realm_access": {"roles": ["admin"]}},
            True,
        ),
    ],
)
def test_role_rule_operators(role_rule: JwtRoleRule, claims: dict[str, Any], granted: bool) -> None:
    authorizer = Authorizer(AuthorizationConfig(access_rules=(AccessRule(role="r", actions=("query",)),)), [role_rule])
    roles = authorizer.roles(AuthResult(user_id="u", username="u", claims=claims))
    assert ("r" in roles) is granted
    assert "*" in roles


def test_roles_and_actions() -> None:
    authorizer = Authorizer(
        AuthorizationConfig(
            access_rules=(
                AccessRule(role="*", actions=("info",)),
                AccessRule(role="group:devs", actions=("query", "feedback")),
                AccessRule(role="group:admins", actions=("admin",)),
            )
        )
    )
    dev = AuthResult(user_id="u", username="u", groups=("devs",))
    assert authorizer.roles(dev) == {"*", "group:devs"}
    assert authorizer.allowed_actions(authorizer.roles(dev)) == {Action.INFO, Action.QUERY, Action.FEEDBACK}
    admin = AuthResult(user_id="a", username="a", groups=("admins",))
    assert authorizer.allowed_actions(authorizer.roles(admin)) == frozenset(Action)
    open_authorizer = Authorizer(None)
    everyone = open_authorizer.allowed_actions({"*"})
    assert Action.ADMIN in everyone and Action.MODEL_OVERRIDE in everyone
    assert Action.READ_OTHERS_CONVERSATIONS not in everyone  # a deliberate difference from the upstream


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            {"access_rules": [{"role": "*", "actions": ["qurey"]}]},
            "authorization.access_rules[0].actions[0]: unknown action 'qurey'",
        ),
        (
            {"access_rules": [{"role": "a", "actions": ["admin", "query"]}]},
            "authorization.access_rules[0].actions: 'admin' grants",
        ),
        ({"access_rules": [{"role": "a"}]}, "authorization.access_rules[0].actions: required key missing"),
        ({"acces_rules": []}, "authorization.acces_rules: unknown key"),
    ],
)
def test_access_rule_problems(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"authorization": section}, env={})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_role_rule_problems() -> None:
    bad = {"jsonpath": "$[", "operator": "like", "value": 1, "roles": ["*", "*"]}
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "authentication": {
                    "module": "jwk-token",
                    "jwk_config": {"url": "https://x/j", "jwt_configuration": {"role_rules": [bad]}},
                }
            },
            env={},
        )
    base = "authentication.jwk_config.jwt_configuration.role_rules[0]"
    text = "\n".join(info.value.problems)
    for key in (
        "jsonpath: invalid JSONPath",
        "operator: must be one of equals, contains, in, match",
        "roles: roles must be unique",
        "roles: '*' is not allowed",
    ):
        assert f"{base}.{key}" in text
    match_bad = {"jsonpath": "$.a", "operator": "match", "value": "(", "roles": ["r"]}
    with pytest.raises(ConfigError, match="invalid regular expression"):
        parse_config(
            {
                "authentication": {
                    "module": "jwk-token",
                    "jwk_config": {"url": "https://x/j", "jwt_configuration": {"role_rules": [match_bad]}},
                }
            },
            env={},
        )


async def test_start_up_warning_without_rules(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lightspeed"):
        await make_client()
    warnings = [r.getMessage() for r in caplog.records if "access_rules" in r.getMessage()]
    assert len(warnings) == 1 and "every caller may perform every action, admin included" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightspeed"):
        await make_client(authorization={"access_rules": [{"role": "*", "actions": ["query"]}]})
    assert not [r for r in caplog.records if "access_rules" in r.getMessage()]


def test_check_config_shows_the_warning(tmp_path: Path) -> None:
    path = tmp_path / "lightspeed-stack.yaml"
    path.write_text(yaml.safe_dump({"name": "t"}))
    proc = subprocess.run(
        [sys.executable, "-m", "lightspeed", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "warning: no authorization.access_rules are configured" in proc.stderr


async def test_model_override_needs_its_action(make_client: Any) -> None:
    providers = [{"name": "echo", "type": "echo", "models": ["echo"]}]
    body = {"query": "hello", "provider": "echo", "model": "echo"}
    client = await make_client(
        llm_providers=providers, authorization={"access_rules": [{"role": "*", "actions": ["query"]}]}
    )
    resp = await client.post("/v1/query", json=body)
    assert resp.status == 403
    detail = (await resp.json())["detail"]
    assert detail["cause"] == "User lacks model_override permission required to override model/provider."
    assert "missing permission: model_override" in detail["response"]
    assert (await client.post("/v1/query", json={"query": "hello"})).status == 200
    allowed = await make_client(
        llm_providers=providers, authorization={"access_rules": [{"role": "*", "actions": ["query", "model_override"]}]}
    )
    assert (await allowed.post("/v1/query", json=body)).status == 200


async def test_other_users_conversations_need_the_others_action(make_client: Any) -> None:
    providers = [{"name": "echo", "type": "echo", "models": ["echo"]}]
    rules = [{"role": "*", "actions": ["query", "query_other_conversations"]}]
    client = await make_client(llm_providers=providers, authorization={"access_rules": rules})
    resp = await client.post("/v1/query?user_id=alice", json={"query": "hi"})
    cid = (await resp.json())["conversation_id"]
    resp = await client.post("/v1/query?user_id=bob", json={"query": "again", "conversation_id": cid})
    assert resp.status == 200
    strict = await make_client(llm_providers=providers)  # no rules: conversations stay their owner's
    resp = await strict.post("/v1/query?user_id=alice", json={"query": "hi"})
    cid = (await resp.json())["conversation_id"]
    resp = await strict.post("/v1/query?user_id=bob", json={"query": "again", "conversation_id": cid})
    assert resp.status == 403
