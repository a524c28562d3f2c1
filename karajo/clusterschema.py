"""
The cluster's tables in PostgreSQL, and their migration (docs/cluster.md).

The schema is karajo's own: every node runs L{migrate} at start.  It holds
one transaction under C{pg_advisory_xact_lock(LOCK_KEY)}, so nodes starting
at once on an empty database queue behind the first, which creates the
tables; the others find them made.  C{karajo_schema.version} says which
steps of L{MIGRATIONS} are applied; a database newer than this karajo knows
is refused (L{SchemaTooNew}) rather than written with old assumptions.

Every C{WHERE} the store (L{karajo.pgstore}) runs is served by an index:
the primary keys serve the look-ups by job, run, slot and request; the
partial and secondary indexes below serve the rest (named at each).

Pure: statements as text and a function given a connection; no Twisted,
no psycopg import (the caller runs it in a thread with its connection).
"""

from __future__ import annotations

from typing import Any

__all__ = ["LOCK_KEY", "MIGRATIONS", "SCHEMA_VERSION", "SchemaTooNew", "migrate"]

#: The advisory lock migrations hold ("karajo" in ASCII).
LOCK_KEY = 0x6B6172616A6F

_V1 = (
    # One row per node: its lease (last_seen, the database's clock).
    """CREATE TABLE karajo_node (
        name text PRIMARY KEY,
        alive boolean NOT NULL,
        last_seen timestamptz NOT NULL,
        running integer NOT NULL,
        version text NOT NULL,
        config_digest text NOT NULL,
        started double precision NOT NULL
    )""",
    # reap: alive nodes by last_seen.
    "CREATE INDEX karajo_node_alive ON karajo_node (last_seen) WHERE alive",
    # One row per job: its counter, who runs it now, its pause state.
    """CREATE TABLE karajo_job (
        kind text NOT NULL,
        job_id text NOT NULL,
        counter bigint NOT NULL DEFAULT 0,
        running_node text,
        running_counter bigint,
        paused boolean NOT NULL DEFAULT false,
        PRIMARY KEY (kind, job_id)
    )""",
    # reap / restarted: the jobs a node runs.
    "CREATE INDEX karajo_job_running ON karajo_job (running_node) WHERE running_node IS NOT NULL",
    # paused_jobs.
    "CREATE INDEX karajo_job_paused ON karajo_job (kind, job_id) WHERE paused",
    # One row per claimed timer slot: the referee of exactly-once.
    """CREATE TABLE karajo_slot (
        kind text NOT NULL,
        job_id text NOT NULL,
        slot double precision NOT NULL,
        node text NOT NULL,
        PRIMARY KEY (kind, job_id, slot)
    )""",
    # prune: slots by age.
    "CREATE INDEX karajo_slot_age ON karajo_slot (slot)",
    # One row per run; log is its final body once it ended.
    """CREATE TABLE karajo_run (
        kind text NOT NULL,
        job_id text NOT NULL,
        counter bigint NOT NULL,
        status text NOT NULL,
        started double precision,
        ended double precision,
        trigger text,
        attempt integer NOT NULL,
        node text,
        log bytea,
        PRIMARY KEY (kind, job_id, counter)
    )""",
    # reap / restarted: a node's running runs.
    "CREATE INDEX karajo_run_running ON karajo_run (node) WHERE status = 'running'",
    # The live log of a running run, as shipped (deleted when it ends).
    """CREATE TABLE karajo_log_chunk (
        kind text NOT NULL,
        job_id text NOT NULL,
        counter bigint NOT NULL,
        off bigint NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (kind, job_id, counter, off)
    )""",
    # Requests forwarded to a job's owner, and their answers.
    """CREATE TABLE karajo_request (
        id bigserial PRIMARY KEY,
        kind text NOT NULL,
        job_id text NOT NULL,
        action text NOT NULL,
        trigger text,
        method text,
        path text,
        headers jsonb,
        body bytea,
        from_node text NOT NULL,
        to_node text NOT NULL,
        created timestamptz NOT NULL DEFAULT now(),
        taken_by text,
        outcome text,
        counter bigint,
        message text
    )""",
    # prune: requests by age.
    "CREATE INDEX karajo_request_age ON karajo_request (created)",
    # The cluster-wide replay guard.
    """CREATE TABLE karajo_replay (
        key bytea PRIMARY KEY,
        expires double precision NOT NULL
    )""",
    # prune: keys by expiry.
    "CREATE INDEX karajo_replay_expires ON karajo_replay (expires)",
)

#: The steps from an empty database: step I{n} makes version I{n + 1}.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
#: The version this karajo writes and reads.
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was migrated by a newer karajo than this one."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"the cluster database has schema version {found}, newer than this karajo's "
            f"{SCHEMA_VERSION}: upgrade this node"
        )
        self.found = found


def migrate(conn: Any) -> int:
    """
    Bring the schema of C{conn}'s database (its C{search_path}) to
    L{SCHEMA_VERSION} in one transaction under the advisory lock; return the
    version found before.  C{conn} is a psycopg connection in autocommit
    mode; this blocks, so it runs in a thread.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS karajo_schema (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM karajo_schema").fetchone()
        found = int(row[0] or 0)
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(found)
        for step in MIGRATIONS[found:]:
            for statement in step:
                conn.execute(statement)
        if found < SCHEMA_VERSION:
            conn.execute("DELETE FROM karajo_schema")
            conn.execute("INSERT INTO karajo_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    return found
