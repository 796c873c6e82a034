"""The filesystem backend's options, stated once, and the checks their types cannot make."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

import attrs

from lightspeed.config import OctalMode, UserDataCollectionConfig

__all__ = ["FilesystemOptions", "default_state_path", "overlap_problems"]

_FILE_MODE: Final = OctalMode(0o600)
_DIR_MODE: Final = OctalMode(0o700)


@attrs.frozen(kw_only=True)
class FilesystemOptions:
    """``user_data_collection.storage.options`` of the filesystem backend."""

    #: Where the state database lives (default: ``.lightspeed-state`` beside the first root).
    state_path: str | None = None
    #: ``rename`` (atomic, not crash-durable) or ``fsync`` (files, directories and commits fsync'd).
    durability: Literal["rename", "fsync"] = "rename"
    file_mode: OctalMode = _FILE_MODE
    dir_mode: OctalMode = _DIR_MODE


def default_state_path(options: FilesystemOptions, collection: UserDataCollectionConfig) -> Path:
    if options.state_path:
        return Path(options.state_path).absolute()
    for root in (collection.feedback_storage, collection.transcripts_storage):
        if root:
            return Path(root).absolute().parent / ".lightspeed-state"
    return Path(".lightspeed-state").absolute()


def overlap_problems(options: FilesystemOptions, collection: UserDataCollectionConfig) -> list[str]:
    problems: list[str] = []
    roots = {"feedback_storage": collection.feedback_storage, "transcripts_storage": collection.transcripts_storage}
    paths = {k: Path(v).absolute() for k, v in roots.items() if v}
    paths["state_path"] = default_state_path(options, collection)
    names = list(paths)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pa, pb = paths[a], paths[b]
            if pa == pb or pa in pb.parents or pb in pa.parents:
                problems.append(
                    f"state_path: {a} ({pa}) and {b} ({pb}) overlap; each needs its own directory"
                    if "state_path" in (a, b)
                    else f"storage roots {a} ({pa}) and {b} ({pb}) overlap; each needs its own directory"
                )
    return problems
