"""The PostgreSQL spool's schema: an ordered list of migrations, applied at start.

Give smtpx a database of its own, or a schema of its own (``options=-csearch_path=smtpx``
in the DSN): the table names are plain. :func:`migrate` applies the missing migrations,
each in its own transaction under a transaction-level advisory lock, so two nodes
starting at once apply each migration once; it is idempotent, and it refuses a database
migrated by a newer smtpx (a node must not write rows it does not understand).

Tables (version 1)
------------------

``messages``: one row per spooled message (one destination of a batch), while it is
queued. Delivered and purged messages are deleted: the hot table stays small.

===============  ================================================================
id               the spool's message id (``SpooledMessage.id``); primary key
parent_id        the id of the first message of its batch (``parent_id``); indexed
spool_date       when it was accepted, seconds since the epoch (float, as the spool)
status           a ``Status`` value; ``sending`` only while a node holds the lease
next_attempt     when it is due, seconds since the epoch; 0: at once
lease_owner      the node that holds the lease (``sending`` only)
lease_until      when the lease lapses, seconds since the epoch (``sending`` only)
lease_token      the fencing token: incremented at every claim, never reused for a
                 message; a settle or renewal names the token it holds, and is
                 refused once another claim took the message over
message_id       the Message-ID field's value (``msgid`` of the metadata); indexed
meta             ``SpooledMessage.to_meta()`` (jsonb); a settle merges the new
                 ``state_meta()`` into it (jsonb ``||`` replaces the keys given, as
                 ``apply_state`` does). The columns above are the queue's authority:
                 meta's ``status``/``at`` keep the value the message goes back to if
                 its lease lapses (the spool never writes ``sending`` there)
body_length      octets of the body (the sum of its chunks)
body_crc32       zlib CRC32 of the whole body, checked by every read
===============  ================================================================

Indexes, chosen for a hot queue. An UPDATE is HOT (no new index entries; its dead
version pruned without VACUUM) only if it changes no indexed column, predicates of
partial indexes included:

* ``messages_due (next_attempt, id) WHERE status IN ('send_now','send_at')``: the claim's
  index, in claim order, holding only waiting messages. A claim and a settle change
  ``status`` and ``next_attempt``: they are never HOT, and cannot be.
* ``messages_leased (id) WHERE status = 'sending'``: finds lapsed leases among the
  messages being sent (as many as the cluster's deliveries in flight). ``lease_until``
  and ``lease_owner`` are deliberately NOT indexed, so a lease renewal, the one update
  repeated while a message is held, stays HOT.
* ``messages_parent (parent_id)`` and ``messages_message_id (message_id)``: admin
  lookups; both columns never change after the insert, so they cost no HOT update.
* ``fillfactor = 70`` leaves room on each page for the new versions HOT needs; the
  autovacuum settings make VACUUM follow a table whose rows churn (queue-library
  practice: solid_queue, pgqueuer), and no status column is indexed for counting
  (``count_by_status`` reads the table: an admin query, not a hot one).

``message_chunks``: the bodies, in chunks (``seq`` 0, 1, ... of at most the writer's
chunk size, 256 KiB by default), written in the transaction that inserts the message,
read back a few chunks per query: memory stays at a few chunks per delivery, not a whole
35 MB body on both sides as one bytea would. ``ON DELETE CASCADE`` removes them with
their message; the foreign key is checked at commit (``DEFERRABLE INITIALLY DEFERRED``) so
the chunks of a streamed body can be written before its row, whose length and CRC are
only known at the end. ``data`` is ``STORAGE EXTERNAL``: stored out of line, never
compressed (mail is mostly base64 of compressed attachments: pglz would spend CPU on
every insert to save little).

===============  ================================================================
message_id       the message's ``id``
seq              the chunk's position, from 0
data             the chunk's octets
===============  ================================================================

``schema_version``: one row per migration applied (version, description, when).

Notifications
-------------

``smtpx_queue`` (:data:`DUE_CHANNEL`): sent with an empty payload when messages become
due at once (added, released, settled back to ``send_now``); ``notify.DueListener``
waits for it. A wake-up hint for idle nodes, nothing more: a node not listening at that
moment misses it, and nodes poll as well. It is sent after the data's commit, in a
transaction of its own that writes nothing (see ``PgQueue._hint``: a NOTIFY inside a
writing transaction holds the global notify lock across that transaction's WAL flush,
serializing committers).

``smtpx_events`` (:data:`EVENTS_CHANNEL`): spool events (delivered, delayed, frozen...) as
a small JSON payload ``{"node", "kind", "id", "detail", "time"}``, under PostgreSQL's
8000-octet limit (the detail is cut to fit), for live views across nodes
(``notify.publish``, ``notify.EventListener``). Best effort, like the in-process event
bus: nothing depends on them, and nothing keeps them; a history that must survive would
be a table, which nothing needs yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from smtpx.errors import SMTPXError

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

__all__ = [
    "DUE_CHANNEL",
    "EVENTS_CHANNEL",
    "MIGRATIONS",
    "Migration",
    "SchemaTooNew",
    "migrate",
]

DUE_CHANNEL = "smtpx_queue"
EVENTS_CHANNEL = "smtpx_events"
# pg_advisory_xact_lock key for migrations: "smtpx" in ASCII, a fixed number every node
# agrees on (advisory locks are per database).
MIGRATION_LOCK = 0x736D747078


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sql: str


_V1 = """
CREATE TABLE messages (
    id            text PRIMARY KEY,
    parent_id     text NOT NULL,
    spool_date    double precision NOT NULL,
    status        text NOT NULL CHECK (status IN ('send_now', 'send_at', 'sending', 'frozen',
                                                  'removed', 'quarantined', 'delivered')),
    next_attempt  double precision NOT NULL DEFAULT 0,
    lease_owner   text,
    lease_until   double precision,
    lease_token   bigint NOT NULL DEFAULT 0,
    message_id    text,
    meta          jsonb NOT NULL,
    body_length   bigint NOT NULL CHECK (body_length >= 0),
    body_crc32    bigint NOT NULL CHECK (body_crc32 BETWEEN 0 AND 4294967295),
    CHECK ((status = 'sending') = (lease_owner IS NOT NULL AND lease_until IS NOT NULL))
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 100,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
CREATE INDEX messages_due ON messages (next_attempt, id)
    WHERE status IN ('send_now', 'send_at');
CREATE INDEX messages_leased ON messages (id) WHERE status = 'sending';
CREATE INDEX messages_parent ON messages (parent_id);
CREATE INDEX messages_message_id ON messages (message_id) WHERE message_id IS NOT NULL;

CREATE TABLE message_chunks (
    message_id  text NOT NULL REFERENCES messages (id) ON DELETE CASCADE
                DEFERRABLE INITIALLY DEFERRED,
    seq         integer NOT NULL CHECK (seq >= 0),
    data        bytea NOT NULL,
    PRIMARY KEY (message_id, seq)
) WITH (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE message_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "messages and their chunked bodies", _V1),)

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version      integer PRIMARY KEY,
    description  text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now()
)
"""


class SchemaTooNew(SMTPXError):
    """The database was migrated by a newer smtpx: this one must not write to it."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the spool database is at schema version {found}; this smtpx knows up to "
            f"{known}: upgrade smtpx on this node"
        )
        self.found = found
        self.known = known


async def migrate(db: Pool | Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the migrations the database lacks, in order, each in a transaction of its
    own under an advisory lock (another node migrating at the same time waits, then finds
    the work done); the versions applied now, [] when none was missing."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _migrate(conn, migrations)
    return await _migrate(db, migrations)


async def _migrate(db: Connection, migrations: Sequence[Migration]) -> list[int]:
    applied: list[int] = []
    for migration in migrations:
        async with db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await db.execute(SCHEMA_VERSION_TABLE)
            done = await db.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            if done > migrations[-1].version:
                raise SchemaTooNew(done, migrations[-1].version)
            if migration.version <= done:
                continue
            await db.execute(migration.sql)
            await db.execute(
                "INSERT INTO schema_version (version, description) VALUES ($1, $2)",
                migration.version,
                migration.description,
            )
            applied.append(migration.version)
    return applied
