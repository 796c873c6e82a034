"""The whole file: :class:`Config`, one attribute per section, and every section's checks run
together (after the converter has checked keys and types)."""

from __future__ import annotations

import attrs

from lightspeed.config.auth import AuthenticationConfig, AuthorizationConfig, auth_problems
from lightspeed.config.collection import UserDataCollectionConfig, collection_problems
from lightspeed.config.inference import (
    InferenceConfig,
    LlamaStackConfig,
    LLMProviderConfig,
    QueryFilter,
    inference_problems,
)
from lightspeed.config.service import ServiceConfig, service_problems

__all__ = ["Config", "semantic_problems"]


@attrs.frozen(kw_only=True)
class Config:
    """The whole ``lightspeed-stack.yaml``."""

    name: str = "lightspeed"
    service: ServiceConfig = attrs.field(factory=ServiceConfig)
    user_data_collection: UserDataCollectionConfig = attrs.field(factory=UserDataCollectionConfig)
    authentication: AuthenticationConfig = attrs.field(factory=AuthenticationConfig)
    #: ``None`` when the section is absent: every caller may do everything (with a warning).
    authorization: AuthorizationConfig | None = None
    inference: InferenceConfig = attrs.field(factory=InferenceConfig)
    llm_providers: tuple[LLMProviderConfig, ...] = ()
    query_filters: tuple[QueryFilter, ...] = ()
    llama_stack: LlamaStackConfig = attrs.field(factory=LlamaStackConfig)

    @classmethod
    def embedded_defaults(cls, data_dir: str = "./data") -> Config:
        """The configuration used when no file is given or found.

        Feedback and transcripts on, stored by the filesystem backend under ``data_dir``;
        the offline ``echo`` LLM provider; the data collector off.
        """
        return cls(
            user_data_collection=UserDataCollectionConfig(
                feedback_enabled=True,
                feedback_storage=f"{data_dir}/feedback",
                transcripts_enabled=True,
                transcripts_storage=f"{data_dir}/transcripts",
            ),
            inference=InferenceConfig(default_provider="echo", default_model="echo"),
            llm_providers=(LLMProviderConfig(name="echo", type="echo", models=("echo",)),),
        )


def semantic_problems(config: Config) -> list[str]:
    """Every problem of the values (the converter has checked keys and types), section by section."""
    return [
        *service_problems(config.service),
        *collection_problems(config.user_data_collection),
        *auth_problems(config.authentication, config.authorization),
        *inference_problems(config),
    ]
