"""The options part of the storage contract (:class:`Configurable`, a base of
:class:`~lightspeed.storage.base.StorageBackend`): a backend declares its options as an attrs
class, stated once; the core structures ``user_data_collection.storage.options`` into it with
the configuration's own converter and checks them, before the backend does any I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from lightspeed.config import UserDataCollectionConfig, structure_section
from lightspeed.storage.errors import StorageConfigError
from lightspeed.storage.values import NoOptions

__all__ = ["Configurable", "structure_options"]


class Configurable:
    """A backend's options and its constructor (the conventions of :mod:`lightspeed.storage.base` hold)."""

    #: The entry-point name this class is registered under; set by the registry.
    name: ClassVar[str] = ""

    #: The attrs class of this backend's ``options``: each field a key, its type and default
    #: stated once. The core structures ``user_data_collection.storage.options`` into it with
    #: the configuration's own converter (unknown keys, wrong types and missing required keys
    #: are errors with the key's path), then calls :meth:`validate_options`.
    Options: ClassVar[type[Any]] = NoOptions

    def __init__(self, *, options: Mapping[str, Any], collection: UserDataCollectionConfig) -> None:
        """Structure and check ``options``; remember the settings; do no I/O here.

        ``self.options`` is then an instance of :attr:`Options`. Raises
        :class:`~lightspeed.storage.errors.StorageConfigError` listing every problem.
        """
        structured, problems = type(self)._structure_options(options, collection)
        if problems:
            raise StorageConfigError(self.name or type(self).__name__, problems)
        self.options: Any = structured
        self.raw_options = dict(options)
        self.collection = collection

    @classmethod
    def _structure_options(
        cls, options: Mapping[str, Any], collection: UserDataCollectionConfig
    ) -> tuple[Any, list[str]]:
        return structure_options(cls.Options, cls.validate_options, options, collection)

    @classmethod
    def check_options(cls, options: Mapping[str, Any], collection: UserDataCollectionConfig) -> list[str]:
        """Every problem with ``options``, each as ``key: message``; empty when they are valid.

        Used by ``lightspeed check-config`` and by the constructor; does no I/O. Backends do
        not override it: they declare :attr:`Options` and, for checks across keys or against
        the rest of the configuration, :meth:`validate_options`.
        """
        return cls._structure_options(options, collection)[1]

    @classmethod
    def validate_options(cls, options: Any, collection: UserDataCollectionConfig) -> list[str]:
        """Problems the types of :attr:`Options` cannot express (ranges, keys that exclude each
        other, paths that overlap the storage roots), each as ``key: message``. No I/O."""
        return []


def structure_options(
    options_class: type[Any],
    validate: Callable[[Any, UserDataCollectionConfig], list[str]],
    options: Mapping[str, Any],
    collection: UserDataCollectionConfig,
) -> tuple[Any, list[str]]:
    """A backend's ``options`` structured into its ``options_class`` with the configuration's
    converter, then checked by ``validate``: the instance and no problems, or ``None`` and every
    problem (an unknown key's problem names the known keys)."""
    structured, problems = structure_section(options, options_class)
    if not problems:
        return structured, validate(structured, collection)
    known = ", ".join(f.name for f in attrs.fields(options_class)) or "none"
    problems = [f"{p} (known: {known})" if p.endswith(": unknown key") else p for p in problems]
    # Check the values too, with the bad keys left out, so every problem is listed at once.
    bad = {p.split(":", 1)[0] for p in problems}
    rest, more = structure_section({k: v for k, v in options.items() if k not in bad}, options_class)
    if rest is not None and not more:
        problems += [p for p in validate(rest, collection) if p.split(":", 1)[0] not in bad]
    return None, problems
