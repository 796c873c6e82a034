"""The LLM side of the file: ``llm_providers``, ``llama_stack`` (run as one more provider),
``inference`` (the defaults) and ``query_filters``, and their checks."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Final

import attrs

from lightspeed.config.values import has_userinfo

if TYPE_CHECKING:
    from lightspeed.config.model import Config

__all__ = [
    "LLAMA_STACK_OPENAI_PATH",
    "LLAMA_STACK_PROVIDER",
    "PROVIDER_TYPES",
    "InferenceConfig",
    "LLMProviderConfig",
    "LlamaStackConfig",
    "QueryFilter",
    "inference_problems",
    "llama_stack_problems",
    "with_llama_stack_provider",
]

PROVIDER_TYPES: Final = ("openai", "echo")
#: Where a Llama Stack server serves the OpenAI-compatible API, below ``llama_stack.url``.
LLAMA_STACK_OPENAI_PATH: Final = "/v1/openai/v1"
#: The provider name a Llama Stack gets when ``inference.default_provider`` does not name one.
LLAMA_STACK_PROVIDER: Final = "llama_stack"


@attrs.frozen(kw_only=True)
class LLMProviderConfig:
    """One entry of ``llm_providers``."""

    name: str
    type: str
    url: str | None = None
    api_key: str | None = None
    api_key_path: str | None = None
    models: tuple[str, ...] = ()
    timeout_seconds: float = 60
    #: Put before each model name sent to the provider (a Llama Stack names its models ``provider/model``).
    model_prefix: str = ""
    #: Also offer the models the provider lists (``GET {url}/models``), asked at start-up and
    #: again when a query names a model not known yet (at most every ``timeout_seconds``).
    discover_models: bool = False


@attrs.frozen(kw_only=True)
class LlamaStackConfig:
    """``llama_stack``: the upstream's Llama Stack connection, run as an OpenAI-compatible provider."""

    url: str | None = None
    api_key: str | None = None
    use_as_library_client: bool | None = None
    library_client_config_path: str | None = None
    timeout: int = 180


@attrs.frozen(kw_only=True)
class InferenceConfig:
    """``inference``: the provider and model used when a query names none."""

    default_provider: str | None = None
    default_model: str | None = None
    #: Previous turns of a conversation sent to the LLM as history.
    max_history_turns: int = 10


@attrs.frozen(kw_only=True)
class QueryFilter:
    """One entry of ``query_filters``: a regular expression redacted before use or storage."""

    name: str
    pattern: str
    replace_with: str = ""


def inference_problems(config: Config) -> list[str]:
    """Every problem of ``llm_providers``, ``inference`` and ``query_filters``."""
    problems: list[str] = []
    add = problems.append
    names: set[str] = set()
    for i, prov in enumerate(config.llm_providers):
        p = f"llm_providers[{i}]"
        if prov.name in names:
            also = " (llama_stack.url adds a provider of that name)" if prov.discover_models else ""
            add(f"{p}.name: duplicate provider name {prov.name!r}{also}")
        names.add(prov.name)
        if prov.type not in PROVIDER_TYPES:
            add(f"{p}.type: must be one of {', '.join(PROVIDER_TYPES)}, got {prov.type!r}")
        if prov.type == "openai" and not prov.url:
            add(f"{p}.url: required for type openai")
        elif prov.url and not re.match(r"https?://[^/\s]+", prov.url):
            add(f"{p}.url: must be an http:// or https:// URL, got {prov.url!r}")
        elif prov.url and has_userinfo(prov.url) and (prov.api_key or prov.api_key_path):
            add(f"{p}.url: must not contain a user or password beside an api_key (aiohttp sends only one)")
        if prov.api_key and prov.api_key_path:
            add(f"{p}.api_key_path: give either api_key or api_key_path, not both")
        if not prov.models and not prov.discover_models:
            add(f"{p}.models: list at least one model (or set discover_models: true)")
        if prov.discover_models and prov.type != "openai":
            add(f"{p}.discover_models: only an openai provider can list its models")
        if not (prov.timeout_seconds > 0 and math.isfinite(prov.timeout_seconds)):
            add(f"{p}.timeout_seconds: must be a finite number greater than 0, got {prov.timeout_seconds}")
    inf = config.inference
    if (inf.default_provider is None) != (inf.default_model is None):
        add("inference: give both default_provider and default_model, or neither")
    elif inf.default_provider is not None:
        match = [p for p in config.llm_providers if p.name == inf.default_provider]
        if not match:
            add(f"inference.default_provider: {inf.default_provider!r} is not in llm_providers")
        elif inf.default_model not in match[0].models:
            add(f"inference.default_model: {inf.default_model!r} is not a model of provider {inf.default_provider!r}")
    if inf.max_history_turns < 0:
        add(f"inference.max_history_turns: must be 0 or more, got {inf.max_history_turns}")

    for i, flt in enumerate(config.query_filters):
        try:
            re.compile(flt.pattern)
        except re.error as exc:
            add(f"query_filters[{i}].pattern: invalid regular expression: {exc}")
        if flt.pattern == "":
            add(f"query_filters[{i}].pattern: must not be empty")
    return problems


def llama_stack_problems(ls: LlamaStackConfig) -> list[str]:
    if ls.use_as_library_client:
        return [
            "llama_stack.use_as_library_client: lightspeed cannot run Llama Stack inside its own process;"
            " run Llama Stack as a server and give its address in llama_stack.url (with"
            " use_as_library_client: false), or configure llm_providers"
        ]
    if ls.use_as_library_client is False and not ls.url:
        return ["llama_stack.url: required when use_as_library_client is false (the Llama Stack server's address)"]
    if ls.url is not None and not re.match(r"https?://[^/\s]+", ls.url):
        return [f"llama_stack.url: must be an http:// or https:// URL, got {ls.url!r}"]
    if ls.timeout <= 0:
        return [f"llama_stack.timeout: must be greater than 0, got {ls.timeout}"]
    return []


def with_llama_stack_provider(config: Config) -> Config:
    """``llama_stack.url`` as an OpenAI-compatible provider at ``{url}/v1/openai/v1``.

    Named after ``inference.default_provider`` (its models are named ``provider/model`` there,
    as the upstream sends them), with ``inference.default_model`` as its model; it also offers
    the models the Llama Stack lists.
    """
    ls = config.llama_stack
    assert ls.url is not None
    inf = config.inference
    default_is_llama = inf.default_provider is not None and all(
        p.name != inf.default_provider for p in config.llm_providers
    )
    name = inf.default_provider if default_is_llama and inf.default_provider else LLAMA_STACK_PROVIDER
    provider = LLMProviderConfig(
        name=name,
        type="openai",
        url=ls.url.rstrip("/") + LLAMA_STACK_OPENAI_PATH,
        api_key=ls.api_key or None,
        models=(inf.default_model,) if default_is_llama and inf.default_model else (),
        timeout_seconds=float(ls.timeout),
        model_prefix=f"{name}/" if default_is_llama else "",
        discover_models=True,
    )
    return attrs.evolve(config, llm_providers=(*config.llm_providers, provider))
