"""The private cattrs converter: strict types (no boolean for a number, no number for a string),
unknown keys rejected, values from ``${env.NAME}`` read as their field's type, and every
structuring error turned into ``dotted.path: message`` lines."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal, TypeVar, get_args, get_origin

import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

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
)
from lightspeed.config.collection import (
    CollectorAuthConfig,
    DataCollectorConfig,
    StorageConfig,
    UserDataCollectionConfig,
)
from lightspeed.config.inference import InferenceConfig, LlamaStackConfig, LLMProviderConfig, QueryFilter
from lightspeed.config.model import Config
from lightspeed.config.service import ServiceConfig
from lightspeed.config.values import EnvText, OctalMode, type_name

__all__ = ["converter", "structure_section", "walk_errors"]

T = TypeVar("T")


def _strict(kind: type, label: str) -> Callable[[Any, type], Any]:
    def hook(value: Any, _: type) -> Any:
        if isinstance(value, EnvText):
            return _from_env(value, kind, label)
        # bool is an int subclass; never accept it where a number is wanted.
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {label}, got a boolean")
        if kind is float and isinstance(value, int):
            return float(value)  # YAML writes 10 for 10.0
        if not isinstance(value, kind):
            raise TypeError(f"expected {label}, got {type_name(value)}")
        return value

    return hook


def _from_env(value: EnvText, kind: type, label: str) -> Any:
    text = str(value)
    if kind is str:
        return text
    if kind is bool and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise TypeError(f"expected {label}, got {text!r} from an environment variable")


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(float, _strict(float, "a number"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean (true or false)"))

    def structure_options(value: Any, _: type) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {type_name(value)}")
        return dict(value)

    conv.register_structure_hook_func(lambda t: t == dict[str, Any], structure_options)

    def structure_str_tuple(value: Any, _: type) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type_name(value)}")
        bad = [i for i, v in enumerate(value) if not isinstance(v, str)]
        if bad:
            raise TypeError(f"expected a list of strings; item {bad[0]} is {type_name(value[bad[0]])}")
        return tuple(value)

    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], structure_str_tuple)

    def structure_literal(value: Any, t: Any) -> Any:
        choices = get_args(t)
        if isinstance(value, bool) or value not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value

    def is_literal(t: Any) -> bool:
        origin: Any = get_origin(t)
        return origin is Literal

    conv.register_structure_hook_func(is_literal, structure_literal)

    def structure_mode(value: Any, _: type) -> OctalMode:
        mode = -1
        if isinstance(value, int) and not isinstance(value, bool):
            mode = value
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                mode = int(value, 8)
        if not 0 <= mode <= 0o777:
            raise ValueError(f"must be an octal permission such as '0600', got {value!r}")
        return OctalMode(mode)

    conv.register_structure_hook(OctalMode, structure_mode)

    def before_class(value: Any, cls: type) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {type_name(value)}")
        return value

    def structure_seq(item: type) -> Callable[[Any, type], Any]:
        def hook(value: Any, _: type) -> Any:
            if value is None:
                return ()
            if not isinstance(value, list):
                raise TypeError(f"expected a list, got {type_name(value)}")
            out: list[Any] = []
            errors: list[Exception] = []
            for i, v in enumerate(value):
                try:
                    out.append(conv.structure(v, item))
                except Exception as exc:  # noqa: BLE001 - collected and re-raised as a group
                    exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"item {i}", i, item)]
                    errors.append(exc)
            if errors:
                raise cattrs.IterableValidationError(f"While structuring a list of {item.__name__}", errors, list)
            return tuple(out)

        return hook

    def is_providers(t: Any) -> bool:
        return bool(t == tuple[LLMProviderConfig, ...])

    def is_filters(t: Any) -> bool:
        return bool(t == tuple[QueryFilter, ...])

    conv.register_structure_hook_func(is_providers, structure_seq(LLMProviderConfig))
    conv.register_structure_hook_func(is_filters, structure_seq(QueryFilter))

    def is_seq_of(item_cls: type) -> Callable[[Any], bool]:
        return lambda t: bool(t == tuple[item_cls, ...])  # type: ignore[valid-type]

    for item_cls in (JwtRoleRule, AccessRule, TrustedProxyServiceAccount):
        conv.register_structure_hook_func(is_seq_of(item_cls), structure_seq(item_cls))
    conv.register_structure_hook(Any, lambda value, _: value)

    # Generated class hooks bind their fields' hooks now, so every hook above must exist first.
    for cls in (
        ServiceConfig,
        StorageConfig,
        CollectorAuthConfig,
        DataCollectorConfig,
        UserDataCollectionConfig,
        JwtRoleRule,
        JwtConfig,
        JwkConfig,
        ApiKeyConfig,
        RhIdentityConfig,
        TrustedProxyServiceAccount,
        TrustedProxyConfig,
        AuthenticationConfig,
        AccessRule,
        AuthorizationConfig,
        LLMProviderConfig,
        LlamaStackConfig,
        InferenceConfig,
        QueryFilter,
        Config,
    ):
        inner = conv.gen_structure_attrs_fromdict(cls)
        conv.register_structure_hook(cls, _checked(inner, before_class))
    return conv


def _checked(inner: Callable[[Any, Any], Any], before: Callable[[Any, type], Any]) -> Callable[[Any, type], Any]:
    def hook(value: Any, cls: type) -> Any:
        return inner(before(value, cls), cls)

    return hook


converter: Final = _make_converter()


def walk_errors(exc: BaseException, path: str) -> Iterator[str]:
    """Turn a cattrs exception tree into ``path: message`` lines."""

    def join(base: str, name: str | int) -> str:
        if isinstance(name, int):
            return f"{base}[{name}]"
        return f"{base}.{name}" if base else name

    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield f"{join(path, key)}: unknown key"
        return
    if isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", []):
                if isinstance(note, AttributeValidationNote):
                    sub_path = join(path, note.name)
                    break
                if isinstance(note, IterableValidationNote):
                    sub_path = join(path, int(note.index))
                    break
            yield from walk_errors(sub, sub_path)
        return
    if isinstance(exc, KeyError):
        yield f"{path}: required key missing"
        return
    message = str(exc)
    yield f"{path or '(top level)'}: {message}"


def structure_section(data: Mapping[str, Any], cls: type[T]) -> tuple[T | None, list[str]]:
    """Structure one section of the file (such as a storage backend's ``options``) into the
    attrs class ``cls`` with the same rules as the whole file: unknown keys, wrong types and
    missing required keys are problems, each ``key: message`` relative to the section.

    Returns the instance and no problems, or ``None`` and every problem found.
    """
    try:
        return converter.structure(dict(data), cls), []
    except Exception as exc:  # noqa: BLE001 - every structuring failure is a problem to report
        return None, list(walk_errors(exc, ""))
