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
from lightspeed.masking import LOG_SECRETS


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
    # No rules: the upstream's default, every action to everyone, admin and others' conversations included.
    assert Authorizer(None).allowed_actions({"*"}) == frozenset(Action)
    assert Authorizer(AuthorizationConfig(access_rules=())).allowed_actions({"*"}) == frozenset(Action)


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


def assert_says_everything_is_allowed(warning: str) -> None:
    """The start-up warning without rules: what anyone may do, and how to restrict it."""
    assert warning.startswith("no authorization.access_rules are configured, so every caller may perform every action")
    for said in (
        "list, read, continue, rename and delete other users' conversations (the *_other_conversations actions)",
        "and admin (PUT /v1/feedback/status turns feedback collection off for everyone)",
        'to restrict it, grant actions to roles in the authorization section, for instance access_rules: [{role: "*"',
        "see docs/authentication.md",
    ):
        assert said in warning, said
    # The log's secret masking leaves it whole (no "authorization: <value>" that looks like a header).
    assert LOG_SECRETS.mask(warning) == warning
    example = warning.split("for instance ", 1)[1].split(" (see docs", 1)[0]
    section = yaml.safe_load(example)
    granted = set(section["access_rules"][0]["actions"])
    assert Action.QUERY in granted and not any("_other_" in a for a in granted)
    parse_config({"authorization": section}, env={})  # the example is a valid configuration


async def test_start_up_warning_without_rules(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lightspeed"):
        await make_client()
    warnings = [r.getMessage() for r in caplog.records if "access_rules" in r.getMessage()]
    assert len(warnings) == 1
    assert_says_everything_is_allowed(warnings[0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightspeed"):
        await make_client(authorization={"access_rules": []})
    assert len([r for r in caplog.records if "access_rules" in r.getMessage()]) == 1
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
    lines = [line for line in proc.stderr.splitlines() if "access_rules" in line]
    assert len(lines) == 1 and lines[0].startswith("lightspeed: warning: no authorization.access_rules")
    assert_says_everything_is_allowed(lines[0].removeprefix("lightspeed: warning: "))


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


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ({"access_rules": [{"role": "*", "actions": ["query"]}]}, 403),
        ({"access_rules": [{"role": "*", "actions": ["query", "query_other_conversations"]}]}, 200),
        (None, 200),  # no rules: the upstream's default, everyone may continue anyone's conversation
    ],
)
async def test_other_users_conversations_need_the_others_action(
    make_client: Any, authorization: dict[str, Any] | None, status: int
) -> None:
    sections: dict[str, Any] = {"llm_providers": [{"name": "echo", "type": "echo", "models": ["echo"]}]}
    if authorization is not None:
        sections["authorization"] = authorization
    client = await make_client(**sections)
    resp = await client.post("/v1/query?user_id=alice", json={"query": "hi"})
    cid = (await resp.json())["conversation_id"]
    resp = await client.post("/v1/query?user_id=bob", json={"query": "again", "conversation_id": cid})
    assert resp.status == status
