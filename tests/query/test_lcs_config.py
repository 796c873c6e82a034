"""A Lightspeed Core Stack ``lightspeed-stack.yaml`` runs unchanged.

The upstream's own example files (``tests/lcs_configs/``, from its ``examples/`` with the
comments left out) start lightspeed; ``llama_stack.url`` is an OpenAI-compatible provider at
``{url}/v1/openai/v1``, tested against a fake Llama Stack serving that path; keys only the
upstream implements are accepted with one warning each; anything else is still an error.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from lightspeed import create_app
from lightspeed.config import LCS_KEY_IGNORED, Config, config_to_dict, parse_config
from lightspeed.errors import ConfigError
from lightspeed.lcs_keys import LCSKeyTree, lcs_key_tree, lcs_keys_not_implemented
from tests.query.fake_llm import FakeLLM

Client = TestClient[web.Request, web.Application]

EXAMPLES = Path(__file__).parent.parent / "lcs_configs"
REPO = Path(__file__).parent.parent.parent
#: The upstream's examples that run Llama Stack inside the upstream's process.
LIBRARY_EXAMPLES = (
    "a2a-state-pg",
    "a2a-state-sqlite",
    "azure-entraid-lib",
    "conversation-cache-pg",
    "conversation-cache-sqlite",
    "lls-library",
    "shields",
    "skills",
)
#: The upstream's examples that use a Llama Stack server, with authentication lightspeed has.
SERVER_EXAMPLES = (
    "azure-entraid-service",
    "byok-okp-rag",
    "lls-external",
    "mcp-servers",
    "quota-limiter-pg",
    "quota-limiter-sqlite",
)


def example(name: str, *, llama_url: str = "http://localhost:8321", data: Path | None = None) -> Any:
    text = (EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")
    text = text.replace("http://localhost:8321", llama_url)
    if data is not None:
        text = text.replace("/tmp/data", str(data))
    return yaml.safe_load(text)


def parse(data: Any, env: dict[str, str] | None = None) -> tuple[Config, list[str]]:
    warnings: list[str] = []
    config = parse_config(data, env=env or {}, warnings=warnings)
    return config, warnings


def problems(data: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=env or {})
    return info.value.problems


@pytest.fixture
async def llama_stack() -> AsyncIterator[FakeLLM]:
    """A fake Llama Stack: the OpenAI-compatible API at /v1/openai/v1, models named provider/model."""
    listed = [
        {"identifier": "openai/fake-model", "provider_id": "openai", "model_type": "llm", "metadata": {}},
        {"identifier": "sentence-transformers/all-mpnet", "provider_id": "sentence-transformers",
         "model_type": "embedding", "metadata": {}},
        {"identifier": "vllm/slow", "provider_id": "vllm", "model_type": "llm", "metadata": {}},
    ]  # fmt: skip
    fake = await FakeLLM(base_path="/v1/openai/v1", listed=listed).start()
    try:
        yield fake
    finally:
        await fake.stop()


# ------------------------------------------------------------------ the upstream's examples


@pytest.mark.parametrize("name", SERVER_EXAMPLES)
async def test_upstream_server_examples_start_and_answer(
    name: str, llama_stack: FakeLLM, tmp_path: Path, aiohttp_client: Any
) -> None:
    config, warnings = parse(example(name, llama_url=llama_stack.root_url, data=tmp_path))
    # One warning per upstream key lightspeed leaves alone, each naming its key.
    named = [w.split(": ", 1)[0] for w in warnings]
    assert len(named) == len(set(named))
    assert "service.color_log" in named and all(w.endswith(LCS_KEY_IGNORED) for w in warnings)
    client: Client = await aiohttp_client(create_app(config))
    resp = await client.post("/v1/query", json={"query": "hello"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["response"] == "You asked: hello"
    # No default model in the file: the first language model the Llama Stack lists, named as it names it.
    assert llama_stack.requests[-1]["model"] == "openai/fake-model"
    if "api_key" in (example(name).get("llama_stack") or {}):
        assert llama_stack.auth_headers[-1] == "Bearer xyzzy"
    assert (tmp_path / "transcripts").is_dir()


@pytest.mark.parametrize("name", LIBRARY_EXAMPLES)
def test_upstream_library_examples_say_what_to_configure_instead(name: str) -> None:
    data = example(name)
    if name == "shields":
        # The upstream's example names its shields "identifier", which its own model rejects.
        for shield in data["shields"]:
            shield["name"] = shield.pop("identifier")
    got = problems(data)
    assert got == [
        "llama_stack.use_as_library_client: lightspeed cannot run Llama Stack inside its own process;"
        " run Llama Stack as a server and give its address in llama_stack.url (with"
        " use_as_library_client: false), or configure llm_providers"
    ]


def test_every_key_of_the_upstream_examples_is_in_the_key_list() -> None:
    """The list is the upstream's: a key its examples use and the list lacks is a stale list."""
    known = set(lcs_key_tree().paths())

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            for k, v in value.items():
                sub = f"{path}.{k}" if path else k
                node = _node(sub)
                if node is not None and node.free:
                    continue
                assert sub in known, f"{sub} (in an upstream example) is not in lightspeed/lcs_config_keys.txt"
                walk(v, sub)
        elif isinstance(value, list):
            for v in value:
                walk(v, path)

    for file in sorted(EXAMPLES.glob("*.yaml")):
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        if file.stem == "shields":
            continue  # its "identifier" is stale upstream (see above)
        walk(data, "")


def _node(path: str) -> LCSKeyTree | None:
    node: LCSKeyTree | None = lcs_key_tree()
    for part in path.split("."):
        if node is None:
            return None
        node = node.child(part)
    return node


def test_check_config_warns_once_per_ignored_key(llama_stack: FakeLLM, tmp_path: Path) -> None:
    """``lightspeed check-config -c`` an upstream file: valid, one warning per key, the provider shown."""
    data = example("mcp-servers", llama_url=llama_stack.root_url, data=tmp_path)
    path = tmp_path / "lightspeed-stack.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "lightspeed", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    # (beside the access-control warning every configuration without authorization.access_rules gets)
    lines = [line for line in proc.stderr.splitlines() if "warning" in line and "access_rules" not in line]
    assert lines == [
        f"lightspeed: warning: {key}: {LCS_KEY_IGNORED}"
        for key in ("service.auth_enabled", "service.color_log", "mcp_servers")
    ]
    effective = yaml.safe_load(proc.stdout)
    assert effective["llm_providers"][0]["url"] == llama_stack.root_url + "/v1/openai/v1"
    assert effective["llm_providers"][0]["api_key"] == "********"


# ------------------------------------------------------------------ llama_stack as a provider


async def test_llama_stack_with_a_default_model_sends_provider_slash_model(
    llama_stack: FakeLLM, make_client: Any
) -> None:
    client: Client = await make_client(
        llama_stack={"url": llama_stack.root_url, "api_key": "k", "timeout": 5},
        inference={"default_provider": "openai", "default_model": "fake-model"},
    )
    resp = await client.post("/v1/query", json={"query": "hi"})
    assert resp.status == 200, await resp.text()
    assert llama_stack.requests[-1]["model"] == "openai/fake-model"
    # A model the Llama Stack lists under another provider is found by asking it.
    resp = await client.post("/v1/query", json={"query": "hi", "provider": "vllm", "model": "slow"})
    assert resp.status == 200, await resp.text()
    assert llama_stack.requests[-1]["model"] == "vllm/slow"
    listed = (await (await client.get("/v1/models")).json())["models"]
    assert {m["identifier"] for m in listed} == {"openai/fake-model", "vllm/slow"}
    # An embedding model is not a model to answer with.
    resp = await client.post(
        "/v1/query", json={"query": "hi", "provider": "sentence-transformers", "model": "all-mpnet"}
    )
    assert resp.status == 404
    assert await resp.json() == {
        "detail": {"response": "Model not found", "cause": "Model with ID all-mpnet does not exist"}
    }


async def test_an_unreachable_llama_stack_does_not_stop_the_start(make_client: Any) -> None:
    client: Client = await make_client(llama_stack={"url": "http://127.0.0.1:9", "timeout": 1})
    assert (await client.get("/liveness")).status == 200
    resp = await client.post("/v1/query", json={"query": "hi"})
    assert resp.status == 404
    assert await resp.json() == {"detail": {"response": "Model not found", "cause": "No Model is configured"}}


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            {"use_as_library_client": False},
            "llama_stack.url: required when use_as_library_client is false (the Llama Stack server's address)",
        ),
        ({"url": "localhost:8321"}, "llama_stack.url: must be an http:// or https:// URL, got 'localhost:8321'"),
        ({"url": "http://x", "timeout": 0}, "llama_stack.timeout: must be greater than 0, got 0"),
    ],
)
def test_llama_stack_problems(section: dict[str, Any], problem: str) -> None:
    assert problems({"llama_stack": section}) == [problem]


# ------------------------------------------------------------------ keys: ours, the upstream's, typos


def test_a_typo_is_an_error_in_shared_sections_and_in_upstream_only_ones() -> None:
    got = problems(
        {
            "service": {"color_log": True, "colour_log": True},
            "conversation_cach": {},
            "quota_handlers": {"limiters": [{"name": "x", "perod": "1 day"}], "sqlite": {"db_pth": "q"}},
            "mcp_servers": [{"name": "a", "url": "http://x", "authorization_headers": {"Any-Header": "ok"}}],
            "authentication": {"module": "noop", "skip_tls_verfication": True},
        }
    )
    assert sorted(got) == [
        "authentication.skip_tls_verfication: unknown key",
        "conversation_cach: unknown key",
        "quota_handlers.limiters[0].perod: unknown key",
        "quota_handlers.sqlite.db_pth: unknown key",
        "service.colour_log: unknown key",
    ]


def test_upstream_only_keys_need_no_environment() -> None:
    """``azure_entra_id: {tenant_id: ${env.TENANT_ID}}`` is ignored before variables are read."""
    config, warnings = parse({"azure_entra_id": {"tenant_id": "${env.TENANT_ID}", "client_id": "${env.CID}"}})
    assert warnings == [f"azure_entra_id: {LCS_KEY_IGNORED}"]
    assert "azure_entra_id" not in config_to_dict(config)


def test_readme_lists_exactly_the_upstream_keys_lightspeed_ignores() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Keys accepted and ignored", 1)[1].split("\n#", 1)[0]
    listed = re.findall(r"^- `([^`]+)`", section, flags=re.MULTILINE)
    assert listed == lcs_keys_not_implemented(Config), (
        "README.md, 'Keys accepted and ignored', must list lcs_keys_not_implemented(Config) in order:"
        " a key implemented now (or newly ignored) changes the list"
    )


# ------------------------------------------------------------------ ${env.NAME:=default}


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${env.PORT:=8081}", {}, 8081),
        ("${env.PORT:=8081}", {"PORT": ""}, 8081),
        ("${env.PORT:=8081}", {"PORT": "9000"}, 9000),
        ("${env.PORT}", {"PORT": "9001"}, 9001),
    ],
)
def test_env_defaults_and_types(value: str, env: dict[str, str], expected: int) -> None:
    config, _ = parse({"service": {"port": value}}, env)
    assert config.service.port == expected


def test_env_operators_in_strings_and_booleans() -> None:
    data = {
        "name": "svc-${env.SUFFIX:=dev}",
        "service": {"access_log": "${env.ACCESS:=false}", "host": "${env.HOST:+0.0.0.0}${env.NOHOST:+nope}x"},
        "user_data_collection": {"feedback_storage": "${env.FB:=}"},
    }
    config, _ = parse(data, {"HOST": "yes"})
    assert config.name == "svc-dev"
    assert config.service.access_log is False
    assert config.service.host == "0.0.0.0x"
    assert config.user_data_collection.feedback_storage is None  # an empty default means not given
    assert problems({"service": {"port": "${env.PORT:=eighty}"}}) == [
        "service.port: expected an integer, got 'eighty' from an environment variable"
    ]
    assert problems({"service": {"port": "${env.PORT}"}}) == ["service.port: environment variable PORT is not set"]


@pytest.mark.parametrize("name", ["api-key-auth", "rh-identity", "rlsapi-cla"])
def test_upstream_examples_with_other_authentication_modules(name: str, tmp_path: Path) -> None:
    """Every key of these files is accepted; only the module may still be one lightspeed lacks."""
    try:
        config, _ = parse(example(name, data=tmp_path))
    except ConfigError as exc:
        assert [p.split(": ", 1)[0] for p in exc.problems] == ["authentication.module"], exc.problems
    else:
        create_app(config)
