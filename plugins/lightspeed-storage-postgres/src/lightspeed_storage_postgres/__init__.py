"""PostgreSQL storage backend for lightspeed: one store for any number of replicas.

Records, conversation owners, history turns and flags live in tables of one schema. The
plugin creates and migrates the schema when it opens (versioned, idempotent, serialised
across replicas by an advisory lock). Collectors on every replica share the work: a claim
is ``SELECT ... FOR UPDATE SKIP LOCKED`` over the pending records followed by setting a
lease (``lease_until``, on the database's clock) in the same transaction, so no two
claims ever hold one record and a dead collector's records come back when its lease ends.

When the database cannot be reached, every operation raises ``StorageUnavailable``
naming the server and the cause (the service answers 503 and reports it on
``/readiness``); the connection pool reconnects by itself once the server is back.

Options (``user_data_collection.storage.options``):

``dsn``
    ``postgresql://user:password@host:port/database``; or give the parts instead:
``host``, ``port``, ``user``, ``password``, ``database``
    (a Unix socket directory is a ``host`` starting with ``/``). Secrets can be given as
    ``${env.NAME}``.
``schema``
    the schema holding the tables (default ``lightspeed``); created when missing.
``pool_min_size`` / ``pool_max_size``
    connections kept open / at most (default 1 / 10).
``connect_timeout_seconds`` / ``command_timeout_seconds``
    default 5 / 30.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Final, TypeVar

import asyncpg
import attrs

from lightspeed.config import UserDataCollectionConfig
from lightspeed.records import ConversationTurn, FeedbackRecord, RecordKind, Transcript, utc_timestamp
from lightspeed.storage import (
    Claim,
    ClaimLost,
    ConversationInfo,
    ConversationPage,
    Deletion,
    PendingStats,
    RecordNotFound,
    StorageBackend,
    StorageUnavailable,
    StorageUnreachable,
    StoredRecord,
    StreamInterrupt,
    check_claim_args,
    check_conversation_id,
    check_flag_name,
    check_user_hash,
    fill_claim,
    stored_record,
)

__all__ = ["PostgresOptions", "PostgresStorage"]

__version__ = "0.1.0"

T = TypeVar("T")

_PARTS: Final = ("host", "port", "user", "password", "database")
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Schema migrations, applied in order; ``{s}`` is the quoted schema name. Never edit one
#: that has shipped: add a new one.
_MIGRATIONS: Final = (
    """
    CREATE TABLE {s}.records (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        kind text NOT NULL,
        record_id text NOT NULL,
        size integer NOT NULL,
        data bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        state text NOT NULL DEFAULT 'pending',
        claim_id uuid,
        claim_owner text,
        lease_until timestamptz,
        reason text
    );
    CREATE INDEX records_pending ON {s}.records (id) WHERE state = 'pending';
    CREATE INDEX records_claim ON {s}.records (claim_id) WHERE claim_id IS NOT NULL;
    CREATE TABLE {s}.conversations (conversation_id text PRIMARY KEY, owner text NOT NULL);
    CREATE TABLE {s}.turns (id bigserial PRIMARY KEY, conversation_id text NOT NULL, turn text NOT NULL);
    CREATE INDEX turns_by_conversation ON {s}.turns (conversation_id, id);
    CREATE TABLE {s}.flags (name text PRIMARY KEY, value boolean NOT NULL);
    CREATE TABLE {s}.claim_members (claim_id uuid NOT NULL, name text NOT NULL, PRIMARY KEY (claim_id, name));
    CREATE INDEX claim_members_by_name ON {s}.claim_members (name);
    """,
    # 2: whose each record is (for deletions), conversation metadata, and the stream registry.
    # The backfill reads the JSON with patterns rather than as jsonb, which refuses the
    # \u0000 escapes a stored text may hold; keys are never followed by an escaped quote.
    r"""
    ALTER TABLE {s}.records ADD COLUMN user_hash text, ADD COLUMN conversation_id text;
    UPDATE {s}.records SET user_hash = split_part(name, '/', 2), conversation_id = split_part(name, '/', 3)
        WHERE kind = 'transcripts';
    UPDATE {s}.records SET
        user_hash = substring(convert_from(data, 'UTF8') FROM '"user_id": ?"([0-9a-f]{{64}})"'),
        conversation_id = substring(convert_from(data, 'UTF8') FROM '"conversation_id": ?"([^"]+)"')
        WHERE kind = 'feedback';
    CREATE INDEX records_by_conversation ON {s}.records (conversation_id);
    CREATE INDEX records_by_user ON {s}.records (user_hash);
    ALTER TABLE {s}.conversations ADD COLUMN created_at text, ADD COLUMN topic_summary text,
        ADD COLUMN last_message_at text, ADD COLUMN message_count integer NOT NULL DEFAULT 0,
        ADD COLUMN last_used_model text, ADD COLUMN last_used_provider text;
    UPDATE {s}.conversations c SET message_count = t.n, created_at = t.first_at FROM (
        SELECT conversation_id, count(*) AS n,
            (array_agg(substring(turn FROM '"timestamp": ?"([^"]*)"') ORDER BY id))[1] AS first_at
        FROM {s}.turns GROUP BY conversation_id) t
        WHERE t.conversation_id = c.conversation_id;
    UPDATE {s}.conversations c SET last_message_at = substring(t.turn FROM '"timestamp": ?"([^"]*)"'),
        last_used_model = substring(t.turn FROM '"model": ?"([^"]*)"'),
        last_used_provider = substring(t.turn FROM '"provider": ?"([^"]*)"')
        FROM (SELECT DISTINCT ON (conversation_id) conversation_id, turn FROM {s}.turns
              ORDER BY conversation_id, id DESC) t
        WHERE t.conversation_id = c.conversation_id;
    CREATE INDEX conversations_by_owner ON {s}.conversations (owner);
    CREATE TABLE {s}.streams (request_id text PRIMARY KEY, owner text NOT NULL,
        expires_at timestamptz NOT NULL, done boolean NOT NULL DEFAULT false,
        interrupted boolean NOT NULL DEFAULT false);
    """,
    # Registrations forget expired streams: an index keeps that from scanning the registry.
    "CREATE INDEX streams_by_expiry ON {s}.streams (expires_at)",
)

_CONVERSATION_COLUMNS: Final = (
    "conversation_id, owner, created_at, last_message_at, message_count,"
    " last_used_model, last_used_provider, topic_summary"
)


def _info(row: asyncpg.Record) -> ConversationInfo:
    return ConversationInfo(
        conversation_id=row["conversation_id"],
        owner=row["owner"],
        created_at=row["created_at"],
        last_message_at=row["last_message_at"],
        message_count=row["message_count"],
        last_used_model=row["last_used_model"],
        last_used_provider=row["last_used_provider"],
        # Kept as JSON text: PostgreSQL's text refuses the NUL character a summary may hold.
        topic_summary=None if row["topic_summary"] is None else json.loads(row["topic_summary"]),
    )


#: Failures that mean "the server is not there (now)": the pool reconnects on the next use.
_CONNECTION_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


@attrs.frozen(kw_only=True)
class PostgresOptions:
    """``user_data_collection.storage.options`` of the postgres backend: a ``dsn``, or its parts."""

    dsn: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    #: The schema that holds the tables (created when missing).
    schema: str = "lightspeed"
    pool_min_size: int = 1
    pool_max_size: int = 10
    connect_timeout_seconds: float = 5
    command_timeout_seconds: float = 30


class PostgresStorage(StorageBackend):
    """Tables in one PostgreSQL schema, shared by every replica."""

    supports_multiple_processes = True
    Options = PostgresOptions

    def __init__(self, *, options: Mapping[str, Any], collection: UserDataCollectionConfig) -> None:
        super().__init__(options=options, collection=collection)
        self.options: PostgresOptions
        opts = self.options
        self.schema: str = opts.schema
        self._s = f'"{self.schema}"'
        self.pool_min_size = opts.pool_min_size
        self.pool_max_size = opts.pool_max_size
        self.connect_timeout = opts.connect_timeout_seconds
        self.command_timeout = opts.command_timeout_seconds
        self._connect_args: dict[str, Any] = {"dsn": opts.dsn} if opts.dsn else {}
        for part in _PARTS:
            if getattr(opts, part) is not None:
                self._connect_args[part] = getattr(opts, part)
        self._pool: asyncpg.Pool | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    def validate_options(cls, options: PostgresOptions, collection: UserDataCollectionConfig) -> list[str]:
        problems = []
        if not options.dsn and not options.host:
            problems.append("dsn: required (or give host, port, user, password and database)")
        for key in ("port", "pool_min_size", "pool_max_size"):
            value = getattr(options, key)
            if value is not None and value < 1:
                problems.append(f"{key}: must be a positive integer, got {value!r}")
        if not _IDENTIFIER.fullmatch(options.schema):
            problems.append(f"schema: must be a lower-case SQL identifier ([a-z_][a-z0-9_]*), got {options.schema!r}")
        if options.pool_min_size > options.pool_max_size:
            problems.append("pool_min_size: must not exceed pool_max_size")
        for key in ("connect_timeout_seconds", "command_timeout_seconds"):
            value = getattr(options, key)
            if not value > 0:
                problems.append(f"{key}: must be a positive number, got {value!r}")
        return problems

    @property
    def where(self) -> str:
        """The server, for messages (never the password)."""
        dsn = self._connect_args.get("dsn")
        if isinstance(dsn, str):
            return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", dsn)
        host, port = self._connect_args.get("host", "?"), self._connect_args.get("port", 5432)
        return f"{host}:{port}/{self._connect_args.get('database', '')}"

    def __repr__(self) -> str:
        return f"<PostgresStorage {self.where} schema={self.schema}>"

    # ------------------------------------------------------------------ plumbing

    def _unavailable(self, exc: BaseException) -> StorageUnavailable:
        cause = str(exc) or type(exc).__name__
        return StorageUnreachable(f"PostgreSQL at {self.where} is not available: {cause}")

    @contextlib.asynccontextmanager
    async def _connection(self, *, transaction: bool = False) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool
        if pool is None:
            raise StorageUnavailable(f"the PostgreSQL store at {self.where} is not open")
        self._in_flight += 1
        self._idle.clear()
        try:
            async with pool.acquire(timeout=self.connect_timeout) as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except _CONNECTION_ERRORS as exc:
            raise self._unavailable(exc) from exc
        except (asyncpg.PostgresError, asyncpg.InternalClientError) as exc:
            raise StorageUnavailable(f"PostgreSQL at {self.where} failed: {exc}") from exc
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op``, once more if the connection was lost (a pooled connection may have died
        with a server restart; the retry gets a fresh one). Only for operations safe to retry."""
        try:
            return await op()
        except StorageUnavailable as exc:
            if not isinstance(exc.__cause__, _CONNECTION_ERRORS) or self._pool is None:
                raise
        return await op()

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                **self._connect_args,
                min_size=min(self.pool_min_size, self.pool_max_size),
                max_size=self.pool_max_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
            )
        except _CONNECTION_ERRORS as exc:
            raise self._unavailable(exc) from exc
        except asyncpg.PostgresError as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL at {self.where}: {exc}") from exc
        self._pool = pool
        try:
            await self._migrate()
        except BaseException:
            self._pool = None
            pool.terminate()
            raise

    async def _migrate(self) -> None:
        """Bring the schema to the newest version; concurrent openers wait for each other."""
        async with self._connection(transaction=True) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"lightspeed-storage:{self.schema}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._s}")
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {self._s}.schema_version (version integer NOT NULL)")
            version = await conn.fetchval(f"SELECT max(version) FROM {self._s}.schema_version") or 0
            if version > len(_MIGRATIONS):
                raise StorageUnavailable(
                    f"schema {self.schema} is at version {version}, newer than this plugin knows"
                    f" ({len(_MIGRATIONS)}); upgrade lightspeed-storage-postgres"
                )
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                await conn.execute(script.format(s=self._s))
                await conn.execute(f"INSERT INTO {self._s}.schema_version (version) VALUES ($1)", number)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                # Operations already under way finish first; new ones see a closed store.
                await asyncio.wait_for(self._idle.wait(), self.command_timeout)
                await asyncio.wait_for(pool.close(), self.command_timeout)
            except (TimeoutError, *_CONNECTION_ERRORS):
                pool.terminate()

    async def ping(self) -> None:
        async def probe() -> None:
            async with self._connection() as conn:
                if await conn.fetchval("SELECT pg_is_in_recovery()"):
                    raise StorageUnavailable(f"PostgreSQL at {self.where} is a read-only standby")

        await self._retrying(probe)

    # ------------------------------------------------------------------ records

    async def _put(self, ref: StoredRecord, data: bytes, *, user: str, conversation_id: str) -> StoredRecord:
        async def insert() -> None:
            async with self._connection() as conn:
                await conn.execute(
                    f"INSERT INTO {self._s}.records (name, kind, record_id, size, data, user_hash, conversation_id)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
                    ref.name,
                    ref.kind.value,
                    ref.record_id,
                    ref.size,
                    data,
                    user,
                    conversation_id,
                )

        await self._retrying(insert)  # idempotent by record id
        return ref

    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        data = record.to_json()
        return await self._put(
            stored_record(record, data), data, user=record.user_id, conversation_id=record.conversation_id
        )

    async def put_transcript(self, record: Transcript) -> StoredRecord:
        data = record.to_json()
        return await self._put(
            stored_record(record, data), data, user=record.user_id, conversation_id=record.conversation_id
        )

    # ------------------------------------------------------------------ conversations

    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        check_conversation_id(conversation_id)
        check_user_hash(owner)

        async def insert() -> str:
            async with self._connection() as conn:
                inserted = await conn.fetchval(
                    f"INSERT INTO {self._s}.conversations (conversation_id, owner, created_at) VALUES ($1, $2, $3)"
                    " ON CONFLICT DO NOTHING RETURNING owner",
                    conversation_id,
                    owner,
                    utc_timestamp(),
                )
                if inserted is not None:
                    return str(inserted)
                # A statement of its own, so its snapshot sees the winner's committed row.
                recorded = await conn.fetchval(
                    f"SELECT owner FROM {self._s}.conversations WHERE conversation_id = $1", conversation_id
                )
                return str(recorded)

        return await self._retrying(insert)

    async def get_conversation_owner(self, conversation_id: str) -> str | None:
        async def read() -> str | None:
            async with self._connection() as conn:
                owner = await conn.fetchval(
                    f"SELECT owner FROM {self._s}.conversations WHERE conversation_id = $1", conversation_id
                )
            return None if owner is None else str(owner)

        return await self._retrying(read)

    async def append_turn(self, conversation_id: str, *, turn: ConversationTurn) -> None:
        check_conversation_id(conversation_id)
        text = json.dumps(turn.to_dict(), ensure_ascii=False)
        async with self._connection() as conn:  # not retried: an append is not idempotent
            # One statement: the turn and the conversation's metadata change together.
            await conn.execute(
                f"WITH added AS (INSERT INTO {self._s}.turns (conversation_id, turn) VALUES ($1, $2) RETURNING 1)"
                f" UPDATE {self._s}.conversations SET message_count = message_count + (SELECT count(*) FROM added),"
                " last_message_at = $3, last_used_model = $4, last_used_provider = $5 WHERE conversation_id = $1",
                conversation_id,
                text,
                turn.timestamp,
                turn.model,
                turn.provider,
            )

    async def get_turns(self, conversation_id: str, *, limit: int) -> list[ConversationTurn]:
        if limit <= 0:
            return []

        async def read() -> list[ConversationTurn]:
            async with self._connection() as conn:
                rows = await conn.fetch(
                    f"SELECT turn FROM (SELECT id, turn FROM {self._s}.turns WHERE conversation_id = $1"
                    " ORDER BY id DESC LIMIT $2) AS last ORDER BY id",
                    conversation_id,
                    limit,
                )
            return [ConversationTurn.from_dict(json.loads(row["turn"])) for row in rows]

        return await self._retrying(read)

    async def list_conversations(
        self, owner: str | None, *, limit: int | None = None, offset: int = 0
    ) -> ConversationPage:
        if (limit is not None and limit < 1) or offset < 0:
            raise ValueError(f"limit must be at least 1 and offset at least 0, got {limit!r} and {offset!r}")

        async def read() -> ConversationPage:
            async with self._connection() as conn:
                rows = await conn.fetch(
                    f"SELECT {_CONVERSATION_COLUMNS}, count(*) OVER () AS total FROM {self._s}.conversations"
                    " WHERE $1::text IS NULL OR owner = $1"
                    " ORDER BY coalesce(last_message_at, created_at) DESC NULLS LAST, conversation_id"
                    " LIMIT $2 OFFSET $3",
                    owner,
                    limit,
                    offset,
                )
                if rows:
                    total = int(rows[0]["total"])
                else:
                    total = await conn.fetchval(
                        f"SELECT count(*) FROM {self._s}.conversations WHERE $1::text IS NULL OR owner = $1", owner
                    )
            return ConversationPage(conversations=tuple(_info(row) for row in rows), total=int(total))

        return await self._retrying(read)

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        async def read() -> ConversationInfo | None:
            async with self._connection() as conn:
                row = await conn.fetchrow(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM {self._s}.conversations WHERE conversation_id = $1",
                    conversation_id,
                )
            return None if row is None else _info(row)

        return await self._retrying(read)

    async def set_topic_summary(self, conversation_id: str, *, topic_summary: str | None) -> bool:
        async def update() -> bool:
            async with self._connection() as conn:
                found = await conn.fetchval(
                    f"UPDATE {self._s}.conversations SET topic_summary = $2 WHERE conversation_id = $1 RETURNING 1",
                    conversation_id,
                    None if topic_summary is None else json.dumps(topic_summary),
                )
            return found is not None

        return await self._retrying(update)

    async def _forget(self, conn: asyncpg.Connection, conversation_ids: Sequence[str]) -> Deletion:
        turns = await conn.fetchval(
            f"WITH gone AS (DELETE FROM {self._s}.turns WHERE conversation_id = ANY($1::text[]) RETURNING 1)"
            " SELECT count(*) FROM gone",
            list(conversation_ids),
        )
        conversations = await conn.fetchval(
            f"WITH gone AS (DELETE FROM {self._s}.conversations WHERE conversation_id = ANY($1::text[]) RETURNING 1)"
            " SELECT count(*) FROM gone",
            list(conversation_ids),
        )
        return Deletion(conversations=int(conversations), turns=int(turns))

    async def _delete_records(self, conn: asyncpg.Connection, where: str, *args: Any) -> Deletion:
        """Delete the records ``where`` selects; those a claim holds are reported in flight.

        A claim that has locked some of them (``FOR UPDATE``) commits first and they come
        back claimed; a later claim skips the rows this statement has locked, and finds
        them gone once it commits.
        """
        rows = await conn.fetch(
            f"DELETE FROM {self._s}.records WHERE {where}"
            " RETURNING id, name, kind, state = 'pending' AND claim_id IS NOT NULL AS claimed",
            *args,
        )
        rows = sorted(rows, key=lambda r: r["id"])
        names = [row["name"] for row in rows]
        await conn.execute(f"DELETE FROM {self._s}.claim_members WHERE name = ANY($1::text[])", names)
        return Deletion(
            transcripts=sum(1 for row in rows if row["kind"] == RecordKind.TRANSCRIPT.value),
            feedback=sum(1 for row in rows if row["kind"] == RecordKind.FEEDBACK.value),
            in_flight=tuple(row["name"] for row in rows if row["claimed"]),
        )

    async def delete_conversation(self, conversation_id: str, *, records: bool = True) -> Deletion:
        async def delete() -> Deletion:
            async with self._connection(transaction=True) as conn:
                deletion = await self._forget(conn, [conversation_id])
                if records:
                    deletion += await self._delete_records(conn, "conversation_id = $1", conversation_id)
            return deletion

        return await self._retrying(delete)  # all or nothing: safe to retry

    async def purge_user(self, owner: str) -> Deletion:
        async def purge() -> Deletion:
            async with self._connection(transaction=True) as conn:
                rows = await conn.fetch(
                    f"SELECT conversation_id FROM {self._s}.conversations WHERE owner = $1 FOR UPDATE", owner
                )
                owned = [row["conversation_id"] for row in rows]
                deletion = await self._forget(conn, owned)
                deletion += await self._delete_records(
                    conn, "user_hash = $1 OR conversation_id = ANY($2::text[])", owner, owned
                )
            return deletion

        return await self._retrying(purge)

    # ------------------------------------------------------------------ streams

    async def register_stream(self, request_id: str, *, owner: str, ttl_seconds: float) -> bool:
        async def register() -> bool:
            async with self._connection() as conn:
                await conn.execute(f"DELETE FROM {self._s}.streams WHERE expires_at <= now()")
                # An expired entry not swept yet (a concurrent sweep) is replaced; a live one never.
                inserted = await conn.fetchval(
                    f"INSERT INTO {self._s}.streams AS s (request_id, owner, expires_at)"
                    " VALUES ($1, $2, now() + make_interval(secs => $3)) ON CONFLICT (request_id) DO UPDATE"
                    " SET owner = $2, expires_at = now() + make_interval(secs => $3),"
                    " done = false, interrupted = false WHERE s.expires_at <= now() RETURNING 1",
                    request_id,
                    owner,
                    float(ttl_seconds),
                )
            return inserted is not None

        return await self._retrying(register)

    async def interrupt_stream(self, request_id: str, *, owner: str) -> StreamInterrupt:
        async def interrupt() -> StreamInterrupt:
            async with self._connection() as conn:
                marked = await conn.fetchval(
                    f"UPDATE {self._s}.streams SET interrupted = true WHERE request_id = $1 AND owner = $2"
                    " AND expires_at > now() AND NOT done AND NOT interrupted RETURNING 1",
                    request_id,
                    owner,
                )
                if marked is not None:
                    return StreamInterrupt.INTERRUPTED
                row = await conn.fetchrow(
                    f"SELECT owner FROM {self._s}.streams WHERE request_id = $1 AND expires_at > now()", request_id
                )
            if row is None:
                return StreamInterrupt.NOT_FOUND
            return StreamInterrupt.FORBIDDEN if row["owner"] != owner else StreamInterrupt.ALREADY_DONE

        return await self._retrying(interrupt)

    async def interrupted_streams(self, request_ids: Collection[str]) -> set[str]:
        async def read() -> set[str]:
            async with self._connection() as conn:
                rows = await conn.fetch(
                    f"SELECT request_id FROM {self._s}.streams WHERE interrupted AND request_id = ANY($1::text[])",
                    list(request_ids),
                )
            return {row["request_id"] for row in rows}

        return await self._retrying(read)

    async def finish_stream(self, request_id: str, *, keep_seconds: float) -> None:
        async def finish() -> None:
            async with self._connection() as conn:
                await conn.execute(
                    f"UPDATE {self._s}.streams SET done = true, expires_at = now() + make_interval(secs => $2)"
                    " WHERE request_id = $1",
                    request_id,
                    float(keep_seconds),
                )

        await self._retrying(finish)

    # ------------------------------------------------------------------ flags

    async def get_flag(self, name: str) -> bool | None:
        async def read() -> bool | None:
            async with self._connection() as conn:
                value = await conn.fetchval(f"SELECT value FROM {self._s}.flags WHERE name = $1", name)
            return None if value is None else bool(value)

        return await self._retrying(read)

    async def set_flag(self, name: str, *, value: bool) -> bool | None:
        check_flag_name(name)

        async def swap() -> bool | None:
            async with self._connection(transaction=True) as conn:
                inserted = await conn.fetchval(
                    f"INSERT INTO {self._s}.flags (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
                    name,
                    value,
                )
                if inserted is not None:
                    return None
                previous = await conn.fetchval(f"SELECT value FROM {self._s}.flags WHERE name = $1 FOR UPDATE", name)
                await conn.execute(f"UPDATE {self._s}.flags SET value = $2 WHERE name = $1", name, value)
                return bool(previous)

        return await self._retrying(swap)

    # ------------------------------------------------------------------ collection

    async def claim(
        self,
        *,
        owner: str,
        kinds: Collection[RecordKind],
        max_records: int,
        max_bytes: int,
        lease_seconds: float,
    ) -> Claim:
        check_claim_args(max_records=max_records, max_bytes=max_bytes, lease_seconds=lease_seconds)
        kind_values = [RecordKind(k).value for k in kinds]
        claim_id = uuid.uuid4()

        async def take() -> Claim:
            async with self._connection(transaction=True) as conn:
                rows = await conn.fetch(
                    f"SELECT id, name, kind, record_id, size FROM {self._s}.records"
                    " WHERE state = 'pending' AND kind = ANY($1::text[])"
                    " AND (lease_until IS NULL OR lease_until <= now())"
                    " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    kind_values,
                    max_records,
                )
                by_name = {row["name"]: row for row in rows}
                chosen = [
                    by_name[ref.name]
                    for ref in fill_claim(
                        (
                            StoredRecord(
                                kind=RecordKind(r["kind"]), record_id=r["record_id"], name=r["name"], size=r["size"]
                            )
                            for r in rows
                        ),
                        max_records=max_records,
                        max_bytes=max_bytes,
                    )
                ]
                expires_at = await conn.fetchval(
                    f"UPDATE {self._s}.records SET claim_id = $1, lease_until = now() + make_interval(secs => $2),"
                    " claim_owner = $4 WHERE id = ANY($3::bigint[])"
                    " RETURNING extract(epoch FROM lease_until)::float8",
                    claim_id,
                    float(lease_seconds),
                    [r["id"] for r in chosen],
                    owner,
                )
                await conn.execute(
                    f"INSERT INTO {self._s}.claim_members (claim_id, name) SELECT $1, unnest($2::text[])",
                    claim_id,
                    [r["name"] for r in chosen],
                )
                if expires_at is None:
                    expires_at = await conn.fetchval(
                        "SELECT extract(epoch FROM now() + make_interval(secs => $1))::float8", float(lease_seconds)
                    )
            records = tuple(
                StoredRecord(kind=RecordKind(r["kind"]), record_id=r["record_id"], name=r["name"], size=r["size"])
                for r in chosen
            )
            return Claim(claim_id=str(claim_id), owner=owner, expires_at=float(expires_at), records=records)

        return await self._retrying(take)  # an abandoned claim expires: safe to retry

    async def read_record(self, record: StoredRecord) -> bytes:
        async def read() -> bytes | None:
            async with self._connection() as conn:
                data = await conn.fetchval(f"SELECT data FROM {self._s}.records WHERE name = $1", record.name)
            return None if data is None else bytes(data)

        data = await self._retrying(read)
        if data is None:
            raise RecordNotFound(f"record {record.name} does not exist (any more)")
        return data

    async def read_many(self, records: Sequence[StoredRecord]) -> list[bytes | None]:
        """The bytes of each record in order (``None`` for a deleted one), in one query."""

        async def read() -> dict[str, bytes]:
            async with self._connection() as conn:
                rows = await conn.fetch(
                    f"SELECT name, data FROM {self._s}.records WHERE name = ANY($1::text[])", [r.name for r in records]
                )
            return {row["name"]: bytes(row["data"]) for row in rows}

        found = await self._retrying(read)
        return [found.get(r.name) for r in records]

    async def _members(
        self, conn: asyncpg.Connection, claim: Claim, records: Sequence[StoredRecord] | None
    ) -> list[str]:
        """The names among ``records`` (all of the claim's when ``None``) still in the claim, in order."""
        rows = await conn.fetch(f"SELECT name FROM {self._s}.claim_members WHERE claim_id = $1::uuid", claim.claim_id)
        members = {row["name"] for row in rows}
        return [r.name for r in (claim.records if records is None else records) if r.name in members]

    async def _lost(self, conn: asyncpg.Connection, claim: Claim, names: Sequence[str]) -> list[str]:
        """Lock the named records and return those another live claim holds."""
        rows = await conn.fetch(
            f"SELECT name, state = 'pending' AND claim_id IS NOT NULL AND claim_id <> $2::uuid"
            f" AND lease_until > now() AS lost FROM {self._s}.records WHERE name = ANY($1::text[])"
            " ORDER BY id FOR UPDATE",
            list(names),
            claim.claim_id,
        )
        return [row["name"] for row in rows if row["lost"]]

    async def renew(self, claim: Claim, *, lease_seconds: float) -> Claim:
        async def extend() -> Claim:
            async with self._connection(transaction=True) as conn:
                names = await self._members(conn, claim, None)
                lost = await self._lost(conn, claim, names)
                if lost:
                    raise ClaimLost(
                        f"claim {claim.claim_id}: {len(lost)} record(s) were taken over after the lease expired"
                        f" (first: {lost[0]})"
                    )
                rows = await conn.fetch(
                    f"UPDATE {self._s}.records SET claim_id = $1::uuid, claim_owner = $4,"
                    " lease_until = now() + make_interval(secs => $2)"
                    " WHERE name = ANY($3::text[]) AND state = 'pending' RETURNING name",
                    claim.claim_id,
                    float(lease_seconds),
                    names,
                    claim.owner,
                )
                expires_at = await conn.fetchval(
                    "SELECT extract(epoch FROM now() + make_interval(secs => $1))::float8", float(lease_seconds)
                )
            mine = {row["name"] for row in rows}
            return Claim(
                claim_id=claim.claim_id,
                owner=claim.owner,
                expires_at=float(expires_at),
                records=tuple(r for r in claim.records if r.name in mine),
            )

        return await self._retrying(extend)

    async def _settle(
        self, claim: Claim, records: Sequence[StoredRecord] | None, *, delete: bool, state: str, reason: str | None
    ) -> None:
        async def settle() -> None:
            async with self._connection(transaction=True) as conn:
                names = await self._members(conn, claim, records)
                lost = await self._lost(conn, claim, names)
                if lost:
                    raise ClaimLost(
                        f"claim {claim.claim_id}: {len(lost)} record(s) were taken over by another collector"
                        f" after the lease expired (first: {lost[0]}); nothing was changed"
                    )
                if delete:
                    await conn.execute(f"DELETE FROM {self._s}.records WHERE name = ANY($1::text[])", names)
                else:
                    await conn.execute(
                        f"UPDATE {self._s}.records SET state = $2, reason = $3, claim_id = NULL, claim_owner = NULL,"
                        " lease_until = NULL WHERE name = ANY($1::text[])",
                        names,
                        state,
                        reason,
                    )
                await conn.execute(f"DELETE FROM {self._s}.claim_members WHERE name = ANY($1::text[])", names)

        await self._retrying(settle)  # all or nothing: safe to retry

    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        await self._settle(claim, records, delete=delete, state="exported", reason=None)

    async def release(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None) -> None:
        async def give_back() -> None:
            async with self._connection(transaction=True) as conn:
                names = await self._members(conn, claim, records)
                await conn.execute(
                    f"UPDATE {self._s}.records SET claim_id = NULL, claim_owner = NULL, lease_until = NULL"
                    " WHERE claim_id = $1::uuid AND name = ANY($2::text[])",
                    claim.claim_id,
                    names,
                )
                await conn.execute(
                    f"DELETE FROM {self._s}.claim_members WHERE claim_id = $1::uuid AND name = ANY($2::text[])",
                    claim.claim_id,
                    names,
                )

        await self._retrying(give_back)

    async def set_aside(self, claim: Claim, *, records: Sequence[StoredRecord], reason: str) -> None:
        await self._settle(claim, records, delete=False, state="aside", reason=reason)

    async def pending_stats(self) -> PendingStats:
        async def count() -> list[asyncpg.Record]:
            async with self._connection() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(
                    f"SELECT kind, count(*) AS n, coalesce(sum(size), 0) AS bytes FROM {self._s}.records"
                    " WHERE state = 'pending' GROUP BY kind"
                )
            return rows

        counts = {k: 0 for k in RecordKind}
        sizes = {k: 0 for k in RecordKind}
        for row in await self._retrying(count):
            counts[RecordKind(row["kind"])] = int(row["n"])
            sizes[RecordKind(row["kind"])] = int(row["bytes"])
        return PendingStats(records=counts, bytes=sizes)
