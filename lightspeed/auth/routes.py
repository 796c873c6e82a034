"""Each route's declaration of what it needs: an action, authentication only, or nothing.

Decorate every handler added to the application with exactly one of these; the
authentication middleware (:mod:`lightspeed.api.access`) enforces it, and a route
without one answers 500 (and ``tests/auth/test_route_actions.py`` fails).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from lightspeed.actions import Action

__all__ = [
    "ACTION_ATTRIBUTE",
    "AUTHENTICATED_ONLY",
    "PUBLIC",
    "authenticated_only",
    "declared_action",
    "public",
    "requires",
]

H = TypeVar("H")

#: The handler attribute holding a route's declaration.
ACTION_ATTRIBUTE: Final = "__lightspeed_action__"
PUBLIC: Final = "public"
AUTHENTICATED_ONLY: Final = "authenticated"


def requires(action: Action) -> Callable[[H], H]:
    """Declare that a route needs ``action`` (after authentication)."""

    def mark(handler: H) -> H:
        setattr(handler, ACTION_ATTRIBUTE, Action(action))
        return handler

    return mark


def authenticated_only(handler: H) -> H:
    """Declare that a route needs an authenticated caller and no particular action."""
    setattr(handler, ACTION_ATTRIBUTE, AUTHENTICATED_ONLY)
    return handler


def public(handler: H) -> H:
    """Declare that a route needs neither authentication nor an action."""
    setattr(handler, ACTION_ATTRIBUTE, PUBLIC)
    return handler


def declared_action(handler: Any) -> Action | str | None:
    """A handler's declaration (an :class:`Action`, ``"public"`` or ``"authenticated"``), ``None`` when missing."""
    for candidate in (handler, getattr(handler, "__func__", None), getattr(handler, "__wrapped__", None)):
        value = getattr(candidate, ACTION_ATTRIBUTE, None) if candidate is not None else None
        if value is not None:
            return value  # type: ignore[no-any-return]
    return None
