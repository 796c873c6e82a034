"""``lightspeed purge``: erase a user's (or one conversation's) data from the configured store.

The user's right to delete, for operators: every conversation the user owns (owner, metadata,
history) and every stored record of the user (transcripts, feedback), collected or not. Safe
while the service and collectors run on the same store: each backend deletes in one atomic
step against the collectors' claims, and names the records a collector held at that moment
(they may still reach the ingress once; nothing else deleted ever does).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from lightspeed.config import Config
from lightspeed.records import hash_user_id
from lightspeed.storage import Deletion, create_backend

__all__ = ["PurgeTarget", "purge", "report_json", "report_text"]


@attrs.frozen(kw_only=True)
class PurgeTarget:
    """What to purge: a user (by id, or by the SHA-256 hash the store keeps) or one conversation."""

    user_id: str | None = None
    user_hash: str | None = None
    conversation_id: str | None = None

    def describe(self) -> str:
        if self.conversation_id is not None:
            return f"conversation {self.conversation_id}"
        if self.user_id is not None:
            return f"user {self.user_id} (stored as {hash_user_id(self.user_id)})"
        return f"user with hash {self.user_hash}"


async def purge(config: Config, target: PurgeTarget) -> Deletion:
    """Erase ``target`` from the store ``config`` selects; raises the storage errors."""
    storage = create_backend(config.user_data_collection)
    async with storage:
        if target.conversation_id is not None:
            return await storage.delete_conversation(target.conversation_id, records=True)
        owner = target.user_hash if target.user_hash is not None else hash_user_id(target.user_id or "")
        return await storage.purge_user(owner)


def report_text(target: PurgeTarget, deletion: Deletion) -> str:
    lines = [
        f"purged {target.describe()}: {deletion.conversations} conversation(s), {deletion.turns} history turn(s),"
        f" {deletion.transcripts} transcript(s), {deletion.feedback} feedback record(s)"
    ]
    if deletion.in_flight:
        lines.append(
            f"{len(deletion.in_flight)} of these records were claimed by a collector at that moment"
            " and may already have reached the ingress:"
        )
        lines += [f"  {name}" for name in deletion.in_flight]
    else:
        lines.append("none of them had been claimed by a collector: none will reach the ingress")
    return "\n".join(lines)


def report_json(target: PurgeTarget, deletion: Deletion) -> str:
    body: dict[str, Any] = {
        "target": attrs.asdict(target),
        "conversations": deletion.conversations,
        "turns": deletion.turns,
        "transcripts": deletion.transcripts,
        "feedback": deletion.feedback,
        "in_flight": list(deletion.in_flight),
    }
    return json.dumps(body, indent=2)
