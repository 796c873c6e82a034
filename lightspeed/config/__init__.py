"""The configuration file: attrs classes, loading, ``${env.NAME}`` substitution, validation.

The file is the Lightspeed Core Stack's ``lightspeed-stack.yaml``. It is structured with a
private cattrs converter that rejects unknown keys and wrong types; every problem is
reported at once, each prefixed with the full dotted path of the offending key.

One module per section family, each with its attrs classes and its checks: ``service``,
``collection`` (``user_data_collection``, the data collector and its credentials, storage),
``auth`` (``authentication``, ``authorization``), ``inference`` (``llm_providers``,
``llama_stack``, ``inference``, ``query_filters``); ``model`` the whole file (:class:`Config`);
``values`` ``${env.NAME}`` and octal modes; ``converter`` the cattrs converter; ``loading``
reading a file and dumping the effective configuration. Import the names from here.
"""

from lightspeed.config.auth import (
    AccessRule,
    ApiKeyConfig,
    AuthenticationConfig,
    AuthorizationConfig,
    JwkConfig,
    JwtConfig,
    JwtRoleRule,
    RhIdentityConfig,
    TrustedProxyConfig,
    TrustedProxyServiceAccount,
    authorization_warnings,
)
from lightspeed.config.collection import (
    CREDENTIAL_MODES,
    DEFAULT_FEEDBACK_CATEGORIES,
    CollectorAuthConfig,
    DataCollectorConfig,
    StorageConfig,
    UserDataCollectionConfig,
    collector_auth_problems,
)
from lightspeed.config.converter import structure_section
from lightspeed.config.inference import (
    LLAMA_STACK_OPENAI_PATH,
    LLAMA_STACK_PROVIDER,
    InferenceConfig,
    LlamaStackConfig,
    LLMProviderConfig,
    QueryFilter,
)
from lightspeed.config.loading import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_FILE,
    LCS_KEY_IGNORED,
    config_secrets,
    config_to_dict,
    load_config,
    parse_config,
    resolve_config_path,
)
from lightspeed.config.model import Config
from lightspeed.config.service import ServiceConfig
from lightspeed.config.values import OctalMode

__all__ = [
    "AccessRule",
    "ApiKeyConfig",
    "AuthenticationConfig",
    "CollectorAuthConfig",
    "CONFIG_ENV_VAR",
    "CREDENTIAL_MODES",
    "AuthorizationConfig",
    "authorization_warnings",
    "JwkConfig",
    "JwtConfig",
    "JwtRoleRule",
    "RhIdentityConfig",
    "TrustedProxyConfig",
    "TrustedProxyServiceAccount",
    "Config",
    "DataCollectorConfig",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_FEEDBACK_CATEGORIES",
    "InferenceConfig",
    "LCS_KEY_IGNORED",
    "LLMProviderConfig",
    "LLAMA_STACK_OPENAI_PATH",
    "LLAMA_STACK_PROVIDER",
    "LlamaStackConfig",
    "OctalMode",
    "QueryFilter",
    "ServiceConfig",
    "StorageConfig",
    "UserDataCollectionConfig",
    "collector_auth_problems",
    "config_secrets",
    "config_to_dict",
    "load_config",
    "parse_config",
    "resolve_config_path",
    "structure_section",
]
