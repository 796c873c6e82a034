"""The configuration file: the seed's keys and defaults, strict validation with full paths,
``${env.NAME}``, file resolution, secrets masking."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightspeed.config import (
    DEFAULT_FEEDBACK_CATEGORIES,
    Config,
    config_to_dict,
    load_config,
    parse_config,
    resolve_config_path,
)
from lightspeed.errors import ConfigError

SEED_EXAMPLE = """
user_data_collection:
  feedback_enabled: true
  feedback_storage: "/tmp/data/feedback"
  transcripts_enabled: true
  transcripts_storage: "/tmp/data/transcripts"
  data_collector:
    enabled: true
    ingress_server_url: "https://your-ingress-server.com/upload"
    ingress_server_auth_token: "your-auth-token"
    ingress_content_service_name: "lightspeed-stack"
    collection_interval: 60  # 1 minute for testing
    cleanup_after_send: true
    connection_timeout_seconds: 30
"""


def problems(data: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=env or {})
    return info.value.problems


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the seed's keys and defaults


def test_empty_file_gives_the_seed_defaults() -> None:
    empty: tuple[dict[str, Any] | None, ...] = (None, {})
    for data in empty:
        config = parse_config(data, env={})
        udc = config.user_data_collection
        assert (udc.feedback_enabled, udc.feedback_storage) == (False, None)
        assert (udc.transcripts_enabled, udc.transcripts_storage) == (False, None)
        dc = udc.data_collector
        assert dc.enabled is False
        assert dc.ingress_server_url is None
        assert dc.ingress_server_auth_token is None
        assert dc.ingress_content_service_name is None
        assert dc.collection_interval == 7200
        assert dc.cleanup_after_send is True
        assert dc.connection_timeout_seconds == 30
        assert udc.storage.backend == "filesystem" and udc.storage.options == {}
        assert udc.feedback_categories == DEFAULT_FEEDBACK_CATEGORIES
        svc = config.service
        assert (svc.port, svc.log_level, svc.workers, svc.access_log) == (8080, "info", 1, True)
        assert svc.max_request_body_bytes == 1024 * 1024
        assert config.authentication.module == "noop"


def test_seed_defaults_section_parses_to_the_same() -> None:
    seed_defaults = """
    user_data_collection:
      feedback_enabled: true
      feedback_storage: "/tmp/data/feedback"
      transcripts_enabled: true
      transcripts_storage: "/tmp/data/transcripts"
      data_collector:
        enabled: false
        ingress_server_url: null
        ingress_server_auth_token: null
        ingress_content_service_name: null
        collection_interval: 7200  # 2 hours in seconds
        cleanup_after_send: true
        connection_timeout_seconds: 30
    """
    config = parse_config(yaml.safe_load(textwrap.dedent(seed_defaults)), env={})
    assert config.user_data_collection.data_collector == parse_config({}, env={}).user_data_collection.data_collector
    assert config.user_data_collection.feedback_storage == "/tmp/data/feedback"


def test_seed_collector_example() -> None:
    config = parse_config(yaml.safe_load(SEED_EXAMPLE), env={})
    dc = config.user_data_collection.data_collector
    assert dc.enabled is True
    assert dc.ingress_server_url == "https://your-ingress-server.com/upload"
    assert dc.ingress_server_auth_token == "your-auth-token"
    assert dc.ingress_content_service_name == "lightspeed-stack"
    assert dc.collection_interval == 60


def test_seed_logging_section() -> None:
    for level in ("debug", "info", "warning", "error", "critical", "DEBUG"):
        assert parse_config({"service": {"log_level": level}}, env={}).service.log_level == level
    assert problems({"service": {"log_level": "verbose"}}) == [
        "service.log_level: must be one of debug, info, warning, error, critical, got 'verbose'"
    ]


def test_embedded_defaults() -> None:
    config = Config.embedded_defaults()
    udc = config.user_data_collection
    assert udc.feedback_enabled and udc.transcripts_enabled
    assert udc.feedback_storage == "./data/feedback" and udc.transcripts_storage == "./data/transcripts"
    assert udc.data_collector.enabled is False
    assert udc.storage.backend == "filesystem"
    assert load_config(None) == config


# ------------------------------------------------------------------ every problem, with its full path


def test_typos_all_reported_with_full_paths() -> None:
    data = {
        "servce": {},
        "service": {"prot": 8080, "port": "8080", "workers": 0},
        "user_data_collection": {
            "feedback_enabled": "yes",
            "data_collector": {"colection_interval": 60, "cleanup_after_send": 1},
            "storage": {"backend": "filesystem", "option": {}},
        },
        "authentication": {"modul": "noop"},
    }
    got = problems(data)
    assert sorted(got) == sorted(
        [
            "servce: unknown key",
            "service.prot: unknown key",
            "service.port: expected an integer, got a string",
            "service.workers: must be at least 1, got 0",
            "user_data_collection.feedback_enabled: expected a boolean (true or false), got a string",
            "user_data_collection.data_collector.colection_interval: unknown key",
            "user_data_collection.data_collector.cleanup_after_send: "
            "expected a boolean (true or false), got an integer",
            "user_data_collection.storage.option: unknown key",
            "authentication.modul: unknown key",
        ]
    )


def test_typos_in_a_file_all_listed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "lightspeed-stack.yaml",
        """
        service:
          port: 8080
          log_leve: debug
        user_data_collection:
          feedback_enable: true
          data_collector:
            colection_interval: 60
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert sorted(info.value.problems) == [
        "service.log_leve: unknown key",
        "user_data_collection.data_collector.colection_interval: unknown key",
        "user_data_collection.feedback_enable: unknown key",
    ]
    message = str(info.value)
    assert str(path) in message and "3 problem(s)" in message


def test_semantic_problems_all_reported() -> None:
    data = {
        "service": {"port": 70000, "workers": 0, "max_request_body_bytes": 10, "max_image_attachment_bytes": -1},
        "user_data_collection": {
            "data_collector": {"collection_interval": 0, "connection_timeout_seconds": -1, "compression_level": 0},
        },
        "authentication": {"module": "oauth"},
    }
    got = problems(data)
    assert got == [
        "service.port: must be between 1 and 65535, got 70000",
        "service.workers: must be at least 1, got 0",
        "service.max_request_body_bytes: must be at least 1024, got 10",
        "service.max_image_attachment_bytes: must be 0 or more, got -1",
        "user_data_collection.data_collector.collection_interval: must be greater than 0, got 0",
        "user_data_collection.data_collector.connection_timeout_seconds: must be greater than 0, got -1",
        "user_data_collection.data_collector.compression_level: must be a gzip level from 1 (fastest) to 9"
        " (smallest), got 0",
        "authentication.module: must be one of noop, noop-with-token, k8s, jwk-token, api-key-token, rh-identity,"
        " trusted-proxy, got 'oauth'",
    ]


def test_image_keys_are_ours_beside_the_upstreams() -> None:
    """``transcripts_include_images`` and ``max_image_attachment_bytes`` are lightspeed's keys, in
    sections the upstream shares: honoured, never warned about as the upstream's, typos still errors."""
    warnings: list[str] = []
    data = {
        "service": {"max_image_attachment_bytes": 2048, "color_log": True},
        "user_data_collection": {"transcripts_include_images": True},
    }
    config = parse_config(data, env={}, warnings=warnings)
    assert config.service.max_image_attachment_bytes == 2048
    assert config.user_data_collection.transcripts_include_images is True
    assert [w.split(":")[0] for w in warnings] == ["service.color_log"]
    defaults = parse_config({}, env={})
    assert defaults.service.max_image_attachment_bytes == 100 * 1024 * 1024
    assert defaults.user_data_collection.transcripts_include_images is False
    assert problems({"user_data_collection": {"transcript_include_images": True}}) == [
        "user_data_collection.transcript_include_images: unknown key"
    ]


def test_typos_and_bad_values_together() -> None:
    data = {
        "service": {"prot": 1, "workers": 0, "port": "x"},
        "user_data_collection": {
            "feedback_enabled": True,
            "data_collector": {"colection_interval": 1, "ingress_content_service_name": "Bad"},
        },
        "llm_providers": [{"name": "p", "type": "echo", "models": ["m"], "timeout_seconds": "slow"}],
    }
    got = problems(data)
    assert sorted(p.split(":")[0] for p in got) == [
        "llm_providers[0].timeout_seconds",
        "service.port",
        "service.prot",
        "service.workers",
        "user_data_collection.data_collector.colection_interval",
        "user_data_collection.data_collector.ingress_content_service_name",
        "user_data_collection.feedback_storage",
    ]
    # A bad required key leaves nothing to check values on: the structural problems are listed.
    assert problems({"llm_providers": [{"name": 1, "type": "echo", "models": ["m"]}]}) == [
        "llm_providers[0].name: expected a string, got an integer"
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"service": {"port": True}}, "service.port: expected an integer, got a boolean"),
        ({"service": {"port": 80.5}}, "service.port: expected an integer, got a number"),
        ({"service": {"host": 1}}, "service.host: expected a string, got an integer"),
        ({"service": []}, "service: expected a mapping, got a list"),
        ({"service": "x"}, "service: expected a mapping, got a string"),
        ({"name": None}, "name: expected a string, got null"),
        ({"user_data_collection": {"feedback_categories": "a"}}, "user_data_collection.feedback_categories: "),
        ({"user_data_collection": {"feedback_categories": [1]}}, "user_data_collection.feedback_categories: "),
        ({"user_data_collection": {"storage": {"options": []}}}, "user_data_collection.storage.options: "),
        ({"llm_providers": [{"name": "x"}]}, "llm_providers[0].type: required key missing"),
        ({"llm_providers": {"name": "x"}}, "llm_providers: expected a list, got a mapping"),
        ({"llm_providers": "abc"}, "llm_providers: expected a list, got a string"),
        ({"query_filters": {"name": "x"}}, "query_filters: expected a list, got a mapping"),
    ],
)
def test_wrong_types(data: dict[str, Any], expected: str) -> None:
    got = problems(data)
    assert len(got) == 1
    assert got[0].startswith(expected), got


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems([1, 2]) == ["(top level): expected a mapping, got a list"]
    path = write(tmp_path / "c.yaml", "service: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems[0].startswith("not valid YAML")


def test_bad_category_names() -> None:
    got = problems({"user_data_collection": {"feedback_categories": ["ok", "has space", ""]}})
    assert got == [
        "user_data_collection.feedback_categories[1]: 'has space' is not a valid category name",
        "user_data_collection.feedback_categories[2]: '' is not a valid category name",
    ]


# ------------------------------------------------------------------ storage paths and collector rules


def test_storage_path_required_when_enabled() -> None:
    got = problems({"user_data_collection": {"feedback_enabled": True, "transcripts_enabled": True}})
    assert got == [
        "user_data_collection.feedback_storage: required when feedback_enabled is true",
        "user_data_collection.transcripts_storage: required when transcripts_enabled is true",
    ]
    got = problems({"user_data_collection": {"feedback_enabled": True, "feedback_storage": ""}})
    assert got == ["user_data_collection.feedback_storage: required when feedback_enabled is true"]
    # Disabled kinds need no path.
    parse_config({"user_data_collection": {"feedback_enabled": False, "transcripts_enabled": False}}, env={})


@pytest.mark.parametrize("name", ["lightspeed-stack", "ols", "a1-b2"])
def test_ingress_content_service_name_accepted(name: str) -> None:
    data = {"user_data_collection": {"data_collector": {"ingress_content_service_name": name}}}
    assert parse_config(data, env={}).user_data_collection.data_collector.ingress_content_service_name == name


@pytest.mark.parametrize("name", ["Lightspeed", "light_speed", "light speed", "", "a/b", "x.y"])
def test_ingress_content_service_name_pattern(name: str) -> None:
    got = problems({"user_data_collection": {"data_collector": {"ingress_content_service_name": name}}})
    assert len(got) == 1
    assert got[0].startswith("user_data_collection.data_collector.ingress_content_service_name: must match [a-z0-9-]+")
    assert repr(name) in got[0]


def test_enabled_collector_needs_its_keys() -> None:
    got = problems({"user_data_collection": {"data_collector": {"enabled": True}}})
    base = "user_data_collection.data_collector"
    assert [p.split(":")[0] for p in got] == [
        f"{base}.ingress_server_url",
        f"{base}.ingress_content_service_name",
        f"{base}.ingress_server_auth_token",
    ]
    got = problems({"user_data_collection": {"data_collector": {"ingress_server_url": "ftp://x"}}})
    assert got == [f"{base}.ingress_server_url: must be an http:// or https:// URL, got 'ftp://x'"]


# ------------------------------------------------------------------ ${env.NAME}


def test_env_substitution() -> None:
    data = {
        "name": "svc-${env.SUFFIX}",
        "user_data_collection": {
            "data_collector": {"ingress_server_auth_token": "${env.TOKEN}"},
            "feedback_enabled": True,
            "feedback_storage": "${env.ROOT}/feedback",
        },
    }
    config = parse_config(data, env={"SUFFIX": "a", "TOKEN": "s3cret", "ROOT": "/srv"})
    assert config.name == "svc-a"
    assert config.user_data_collection.data_collector.ingress_server_auth_token == "s3cret"
    assert config.user_data_collection.feedback_storage == "/srv/feedback"


def test_unset_env_variables_all_named() -> None:
    data = {
        "name": "${env.NAME_A}",
        "user_data_collection": {"data_collector": {"ingress_server_auth_token": "${env.LS_TOKEN}"}},
        "query_filters": [{"name": "x", "pattern": "${env.PATTERN}"}],
    }
    got = problems(data, env={"NAME_A": "ok"})
    assert got == [
        "user_data_collection.data_collector.ingress_server_auth_token: environment variable LS_TOKEN is not set",
        "query_filters[0].pattern: environment variable PATTERN is not set",
    ]


def test_env_substitution_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_TEST_NAME", "from-env")
    assert parse_config({"name": "${env.LS_TEST_NAME}"}).name == "from-env"


def test_env_substitution_is_typed_by_the_field() -> None:
    # A value that is one reference is read as its field's type, as the upstream's loader does;
    # a literal string stays a string.
    assert parse_config({"service": {"port": "${env.PORT}"}}, env={"PORT": "9000"}).service.port == 9000
    assert problems({"service": {"port": "9000"}}) == ["service.port: expected an integer, got a string"]
    assert problems({"service": {"port": "${env.PORT}x"}}, env={"PORT": "9000"}) == [
        "service.port: expected an integer, got a string"
    ]


# ------------------------------------------------------------------ which file


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    flag = write(tmp_path / "flag.yaml", "name: flag\n")
    env_file = write(tmp_path / "env.yaml", "name: env\n")
    assert resolve_config_path(None, env={}) is None
    local = write(tmp_path / "lightspeed-stack.yaml", "name: local\n")
    assert resolve_config_path(None, env={}) == Path("lightspeed-stack.yaml")
    assert resolve_config_path(None, env={"LIGHTSPEED_CONFIG": str(env_file)}) == env_file
    assert resolve_config_path(str(flag), env={"LIGHTSPEED_CONFIG": str(env_file)}) == flag
    assert resolve_config_path(None, env={"LIGHTSPEED_CONFIG": ""}) == Path("lightspeed-stack.yaml")
    assert load_config(resolve_config_path(None, env={}), env={}).name == "local"
    local.unlink()
    assert resolve_config_path(None, env={}) is None


def test_named_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "lightspeed-stack.yaml", "name: local\n")  # never a fallback for a named file
    with pytest.raises(ConfigError) as info:
        resolve_config_path("missing.yaml", env={})
    assert info.value.problems == ["configuration file 'missing.yaml' (from --config) does not exist or is not a file"]
    with pytest.raises(ConfigError) as info:
        resolve_config_path(None, env={"LIGHTSPEED_CONFIG": "gone.yaml"})
    assert "'gone.yaml' (from $LIGHTSPEED_CONFIG)" in info.value.problems[0]
    with pytest.raises(ConfigError):
        resolve_config_path(str(tmp_path), env={})  # a directory is not a file


# ------------------------------------------------------------------ secrets


def test_secrets_masked() -> None:
    data = {
        "user_data_collection": {
            "data_collector": {"ingress_server_auth_token": "s3cret-token"},
            "storage": {"backend": "filesystem", "options": {"dsn": "postgresql://u:pw@h/db", "durability": "fsync"}},
        },
        "llm_providers": [
            {"name": "p", "type": "openai", "url": "http://127.0.0.1:1", "api_key": "sk-123", "models": ["m"]}
        ],
    }
    config = parse_config(data, env={})
    shown = config_to_dict(config)
    text = yaml.safe_dump(shown)
    for secret in ("s3cret-token", "pw@h", "sk-123"):
        assert secret not in text
    assert shown["user_data_collection"]["data_collector"]["ingress_server_auth_token"] == "********"
    assert shown["user_data_collection"]["storage"]["options"]["durability"] == "fsync"
    assert shown["llm_providers"][0]["api_key"] == "********"
    assert shown["user_data_collection"]["data_collector"]["ingress_server_auth_token_path"] is None
    raw = config_to_dict(config, mask_secrets=False)
    assert raw["llm_providers"][0]["api_key"] == "sk-123"
    # What is printed parses back to the same configuration (unmasked).
    assert parse_config(raw, env={}) == config


def test_credentials_inside_urls_masked() -> None:
    data = {
        "user_data_collection": {
            "data_collector": {"ingress_server_url": "https://collector:hunter2@ingress.example/upload"},
        },
    }
    shown = config_to_dict(parse_config(data, env={}))
    url = shown["user_data_collection"]["data_collector"]["ingress_server_url"]
    assert "hunter2" not in url
    assert url == "https://collector:********@ingress.example/upload"
    # Unmasked on request, and URLs without a password untouched.
    raw = config_to_dict(parse_config(data, env={}), mask_secrets=False)
    assert raw["user_data_collection"]["data_collector"]["ingress_server_url"].endswith(
        "hunter2@ingress.example/upload"
    )
