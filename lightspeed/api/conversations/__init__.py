"""``/v1/conversations`` and ``/v2/conversations``: list, read, delete and retitle conversations.

Wire-compatible with the Lightspeed Core Stack: the same paths, bodies, status codes and
error texts. Both versions read the same store; they differ where the upstream's do:

* list items: v1 has the conversation's metadata, v2 ``conversation_id``,
  ``topic_summary`` and ``last_message_timestamp`` (Unix seconds);
* another user's conversation: v1 answers 403 unless the caller was granted the matching
  ``*_other_conversations`` action (every caller is when no access rules are configured, as
  upstream); v2 keeps to the caller's own, whatever the grants, as the upstream's v2 (its
  conversation cache is keyed by user): another user's answers as if it did not exist (404;
  ``DELETE``: ``deleted: false``), and the list holds only the caller's.

Lightspeed adds paging to the lists (``limit``, ``offset``; without them the whole list,
as the upstream; ``X-Total-Count`` gives the length of the whole list) and, for the user's
right to delete, ``DELETE`` also deletes the conversation's transcripts and feedback that
were not collected yet (``user_data_collection.delete_pending_with_conversation``), saying
how many in ``deleted_records``.

``lookup.py`` finds a conversation and checks who may act on it, ``bodies.py`` holds the paging
parameters and the answers' shapes, ``handlers.py`` the handlers and routes.
"""

from lightspeed.api.conversations.handlers import ROUTE_ACTIONS, add_routes
from lightspeed.api.conversations.lookup import conversation_id_from_path

__all__ = ["ROUTE_ACTIONS", "add_routes", "conversation_id_from_path"]
