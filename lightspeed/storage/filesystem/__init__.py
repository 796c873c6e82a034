"""The default backend: records as JSON files in the seed's layout, state in one SQLite file.

::

    feedback_storage/{record_id}.json
    transcripts_storage/{sha256(user_id)}/{conversation_id}/{record_id}.json
    state_path/                  (outside both roots, never collected; nothing here is *.json)
        state.sqlite3 (-wal, -shm)   owners, history turns, flags, claims, exported names
        aside/{record name}.aside    records too large for any upload, with a .reason beside

Record files are written to a temporary dot file (``.tmp``, never ``.json``) and renamed
into place, so ``*.json`` only ever shows complete records, exactly as the upstream
exporter expects. Everything else lives in the state database (WAL mode): one transaction
per writer batch, visible to every process sharing the directory once committed.

Options (``user_data_collection.storage.options``, :class:`FilesystemOptions`):
``state_path`` (default ``.lightspeed-state`` beside the first storage root), ``durability``
(``rename``: atomic, survives the process being killed; ``fsync``: also survives power
loss: files, their directories and each commit are fsync'd), ``file_mode`` / ``dir_mode``
(default ``0600`` / ``0700``).

Modules: :mod:`.options` (the options), :mod:`.files` (atomic writes, directories),
:mod:`.lanes` (the one way blocking work leaves the event loop), :mod:`.statedb` (the
database, its schema, its connections), :mod:`.oldlayout` (the import of the file layout that
came before it), :mod:`.querystate` (owners, history and flags: the query path's state),
:mod:`.scanning` (finding records), :mod:`.claims` (claims, leases, acks),
:mod:`.conversations` (metadata, deletions, streams), :mod:`.deleter` and
:mod:`.deleter_child` (deleting uploaded records in a helper process), :mod:`.backend` (the
class, its lifecycle, record files and collection).

Threads: the **writer** lane (one thread, the only connection that writes; the jobs the
loop submits during one iteration are handed over together; jobs taken in batches of up to
512: reads and record files first, then the database writes in one transaction; one
``COMMIT`` and one fsync per directory per batch, then every request of the batch released:
group commit), the **pool** lane (4 threads, a reading connection each; one job at a time)
and the **unlink** lane (16 threads that delete files after an upload only when the deleting
helper process cannot run: :mod:`.deleter`, decision ``collector-03``). The event loop never
waits on a lock or a file: its one exception is the query path's reads of an owner and a
history, a few index lookups on a reading connection of its own that never waits (SQLite's busy
timeout 0; a read refused as busy runs on a pool thread instead; decision ``query-05``).

=============================  ======  ==========================  ==========================================
operation                      thread  lock                        what a crash at any point leaves behind
=============================  ======  ==========================  ==========================================
put_feedback / put_transcript  writer  none (unique temp name)     the record whole, or nothing (a stale
                                                                   ``.tmp`` at most, removed after an hour)
store_interaction              writer  none (the transcript, early the transcript whole or nothing; then the
                                       pass), then SQLite write    owner and the turn committed together, or
                                       lock (batch)                neither (a transcript without its turn: the
                                                                   query was never answered)
set_conversation_owner         writer  SQLite write lock (batch)   the owner committed, or no owner
append_turn                    writer  SQLite write lock (batch)   the turn committed, or no turn
set_flag                       writer  SQLite write lock (batch)   the new value, or the old one
get_flag                       writer  none (a read)               nothing
get_conversation_owner,        loop    none (WAL snapshot; busy:   nothing
get_turns                              a pool thread)
claim                          pool    none (the scan), then       the claim and its records held, or no
                               writer  SQLite write lock           claim; an unacked claim expires
renew                          writer  SQLite write lock           the old lease or the new one
ack delete=False               writer  SQLite write lock           exported and out of the claim, or neither
ack delete=True                writer, SQLite write lock; none     some files deleted while the claim still
                               helper  for the unlinks             lists them: the next claim of those
                               process                             names reads them as vanished
release                        writer  SQLite write lock           the records back, or still claimed
set_aside                      writer  SQLite write lock           the file moved (or not) and the claim
                                                                   left (or not); a moved file is never
                                                                   claimed again
read_record / read_many,       pool    none                        nothing
pending_stats
ping                           pool,   SQLite write lock           a probe file at most (a ``.tmp``)
                               writer
list_conversations,            pool    none (WAL snapshot)         nothing
get_conversation,
interrupted_streams
set_topic_summary,             writer  SQLite write lock (batch)   the new row or value, or the old one
register/interrupt/
finish_stream
delete_conversation,           pool    none (finding the files),   some of the record files deleted and the
purge_user                     writer  then SQLite write lock      conversation still known: a retry
                                                                   finishes it
=============================  ======  ==========================  ==========================================

A directory that cannot be created or written (a file in its path, a read-only volume, a full
disk) does not make :meth:`~.FilesystemStorage.open` fail: it logs one error line per such
directory, and what needs it raises ``StorageUnavailable`` (``StorageRootUnavailable`` for a
record directory) until it can be used; each write and each ``ping`` tries it again (the
writer lane's database connection is opened on first use, and again after that failed).

A state directory written by an earlier version (owner files ``conversations/*.json``,
``flags/``, ``claims/``, ``exported.log``) is imported into the database on first open and
then removed; see :func:`.oldlayout.import_old_layout`.
"""

from lightspeed.storage.filesystem.backend import FilesystemOptions, FilesystemStorage

__all__ = ["FilesystemOptions", "FilesystemStorage"]
