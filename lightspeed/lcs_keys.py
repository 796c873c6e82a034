"""The Lightspeed Core Stack's configuration keys, so its ``lightspeed-stack.yaml`` runs unchanged.

``lcs_config_keys.txt`` (beside this module) lists every key the upstream's configuration
model defines. :func:`split_lcs_keys` walks a parsed file beside lightspeed's own
configuration classes: a key lightspeed implements stays, a key only the upstream
defines is taken out (and reported, so it is warned about once), and a key in neither
stays too, for the converter to report as ``unknown key``. Inside a section that only the
upstream has, the keys are still checked against the list, so a typo there is an error as
well.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterator
from importlib import resources
from typing import Any, Final

import attrs

__all__ = ["LCSKeyTree", "lcs_key_tree", "lcs_keys_not_implemented", "split_lcs_keys"]

KEYS_FILE: Final = "lcs_config_keys.txt"


@attrs.define
class LCSKeyTree:
    """One key of the upstream's file: the keys beneath it, or ``free`` for a free-form mapping."""

    children: dict[str, LCSKeyTree] = attrs.field(factory=dict)
    free: bool = False

    def child(self, name: str) -> LCSKeyTree | None:
        return self.children.get(name)

    def paths(self, prefix: str = "") -> Iterator[str]:
        """Every key's dotted path, parents before children."""
        for name, node in self.children.items():
            path = f"{prefix}.{name}" if prefix else name
            yield path
            yield from node.paths(path)


@functools.cache
def lcs_key_tree() -> LCSKeyTree:
    """The upstream's keys, read once from ``lcs_config_keys.txt``."""
    root = LCSKeyTree()
    text = resources.files("lightspeed").joinpath(KEYS_FILE).read_text(encoding="utf-8")
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        node = root
        for part in line.split("."):
            if part == "*":
                node.free = True
                break
            node = node.children.setdefault(part.removesuffix("[]"), LCSKeyTree())
    return root


def _attrs_class(tp: Any) -> type | None:
    """The attrs class a field holds (itself, or the items of a tuple of them), else None."""
    if attrs.has(tp):
        return typing.cast(type, tp)
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and args and attrs.has(args[0]):
        return typing.cast(type, args[0])
    return None


def _fields(cls: type) -> dict[str, Any]:
    return {f.name: f.type for f in attrs.fields(attrs.resolve_types(cls))}


def split_lcs_keys(data: dict[str, Any], model: type) -> tuple[dict[str, Any], list[str], list[str]]:
    """Take the keys only the upstream defines out of ``data`` (parsed YAML for ``model``).

    Returns the data without them, the dotted paths taken out (the topmost of each subtree,
    in file order) and problems found inside the taken-out subtrees (keys the upstream does
    not define either), as ``path: unknown key`` lines.
    """
    ignored: list[str] = []
    problems: list[str] = []
    kept = _split(data, model, lcs_key_tree(), "", ignored, problems)
    return kept, ignored, problems


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _split(
    data: dict[str, Any], model: type, tree: LCSKeyTree | None, path: str, ignored: list[str], problems: list[str]
) -> dict[str, Any]:
    ours = _fields(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        sub = tree.child(key) if tree is not None and isinstance(key, str) else None
        if key in ours:
            inner = _attrs_class(ours[key])
            if inner is not None and isinstance(value, dict):
                value = _split(value, inner, sub, _join(path, key), ignored, problems)
            elif inner is not None and isinstance(value, list):
                value = [
                    _split(v, inner, sub, f"{_join(path, key)}[{i}]", ignored, problems) if isinstance(v, dict) else v
                    for i, v in enumerate(value)
                ]
            out[key] = value
        elif sub is not None:
            ignored.append(_join(path, key))
            _check(value, sub, _join(path, key), problems)
        else:
            out[key] = value  # neither ours nor the upstream's: the converter reports it
    return out


def _check(value: Any, tree: LCSKeyTree, path: str, problems: list[str]) -> None:
    """Report keys under an upstream-only key that the upstream does not define either."""
    if tree.free or not tree.children:
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, tree, f"{path}[{i}]", problems)
    elif isinstance(value, dict):
        for key, sub in value.items():
            node = tree.child(key) if isinstance(key, str) else None
            if node is None:
                problems.append(f"{_join(path, key)}: unknown key")
            else:
                _check(sub, node, _join(path, key), problems)


def lcs_keys_not_implemented(model: type) -> list[str]:
    """The upstream's keys that ``model`` (lightspeed's :class:`~lightspeed.config.Config`)
    does not implement: the topmost of each such subtree, in the list's order."""
    out: list[str] = []

    def walk(cls: type | None, tree: LCSKeyTree, path: str) -> None:
        ours = _fields(cls) if cls is not None else {}
        for name, node in tree.children.items():
            if name in ours:
                inner = _attrs_class(ours[name])
                if inner is not None:
                    walk(inner, node, _join(path, name))
            else:
                out.append(_join(path, name))

    walk(model, lcs_key_tree(), "")
    return out
