"""The PostgreSQL store's schema and its migrations, run once however many servers start together.

The tables mirror the SQLite store's (`_sqlite_schema`), column for column, so both share one codec
(`_sqlite_codec`: records ↔ rows): timestamps are BIGINT microseconds since the Unix epoch (UTC),
durations BIGINT microseconds, the JSON parts compact JSON in TEXT columns, bytes in BYTEA.

- `executions`: `seq` (an identity, never reused: the newest-first paging key), `id` UNIQUE, the
  Execution's fields (its trace context as JSON, `submitted_by`: the identity that submitted it),
  `request_fingerprint`; `idempotency_key` UNIQUE where not empty.
- `task_runs`: `seq` (insertion order, the tie-break of the PENDING queue), `id` UNIQUE,
  `execution_id` → executions, `position`, the TaskRun's fields; attempts are a JSON array.
- `task_run_inputs`: the input bytes of each task run, written once, apart from the often-updated row.
- `events`: (`execution_id`, `sequence`) primary key.
- `schedules` (version 2): one row per schedule, its name and the whole schedule as one JSON
  document (`_schedule_json`).
- `taskwire_schema`: one row, the schema version.
- `taskwire_owner` (`_postgres_lease`): one row, who holds the database; made before any migration
  runs (only the holder migrates), outside the schema version.

Version 3 adds flow control to `task_runs`, as SQLite's version 8: `priority` (NULL for the default),
`concurrency_key` and `concurrency_limit` (NULL without a key), `fairness_key`, `rate_limit` and
`rate_limit_key` (NULL without); a task run of another priority, with either key or with a rate limit
is never cold (`task_runs_not_cold` is made again with them).

Version 4 adds active-active replicas (`_postgres_replicas`): `executions.holder` (the replica that
holds the execution; '' without replicas) and `executions.claimed_by` (a replica that asked for it),
`taskwire_mail` (messages between replicas, oldest first per recipient) and `taskwire_leader` (one
row: the replica that adopts dead replicas' executions, runs schedules and retention).
`taskwire_replicas` (`_postgres_lease`: one lease row per replica name) is made before any migration,
as `taskwire_owner` is.

Version 5 adds `taskwire_workers`: per replica, the workers connected to it as it last published them (a JSON
array), so that any replica lists and drains them all. Version 6 adds its `drains`: the operators' drains that
replica keeps for worker instances (a JSON array), so that an instance that moves to another replica is told.

Migrations: `MIGRATIONS[n]` takes the database from version n to n + 1. `migrate` runs them in one
transaction that holds a transaction-level advisory lock (`MIGRATION_LOCK`), so servers that start
together on a new or older database wait for the first, and each later one finds the work done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from ._protocol import StoreError

# The migration's advisory lock key (64-bit form): "twmigrat" in ASCII. The lease's locks use the two-key form
# (`_postgres_lease.OWNER_LOCK_CLASS`), a key space of its own.
MIGRATION_LOCK: Final = 0x74776D6967726174
# How long a migration's steps (and the wait for another server's migration) may take: longer than the store lets a
# statement run, since a step on a large table (an index over every task run) may take minutes. The lease is renewed
# meanwhile.
MIGRATION_TIMEOUT_S: Final = 24 * 3600.0
NO_STATEMENT_TIMEOUT: Final = "SET LOCAL statement_timeout = 0"

TERMINAL_SQL: Final = "('SUCCESS', 'FAILED', 'CANCELLED')"
# Cold executions (see `ColdTaskRun`): the texts match the partial indexes below, which PostgreSQL then uses.
COLD_EXECUTION_SQL: Final = "state = 'PENDING' AND closing IS NULL AND deadline IS NULL"
NOT_COLD_TASK_RUN_SQL: Final = (
    "(state <> 'PENDING' OR attempts <> '[]' OR schedule_to_start_us IS NOT NULL OR priority IS NOT NULL "
    "OR concurrency_key IS NOT NULL OR fairness_key IS NOT NULL OR rate_limit IS NOT NULL)"
)
_NOT_COLD_TASK_RUN_SQL_V1: Final = "(state <> 'PENDING' OR attempts <> '[]' OR schedule_to_start_us IS NOT NULL)"

_SCHEMA_V1: Final = (
    """
    CREATE TABLE executions (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        reason_code TEXT,
        reason_message TEXT,
        closing TEXT,
        metadata TEXT NOT NULL,
        deadline BIGINT,
        not_before BIGINT,
        idempotency_key TEXT NOT NULL,
        request_fingerprint TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        started_at BIGINT,
        ended_at BIGINT,
        trace_context TEXT NOT NULL DEFAULT '{}',
        submitted_by TEXT NOT NULL DEFAULT ''
    )
    """,
    "CREATE UNIQUE INDEX executions_by_idempotency_key ON executions (idempotency_key) WHERE idempotency_key <> ''",
    "CREATE INDEX executions_by_state ON executions (state, seq)",
    "CREATE INDEX executions_by_submitter ON executions (submitted_by, seq)",
    f"CREATE INDEX executions_active ON executions (seq) WHERE state NOT IN {TERMINAL_SQL}",
    f"CREATE INDEX executions_cold ON executions (id) WHERE {COLD_EXECUTION_SQL}",
    f"CREATE INDEX executions_finished ON executions (ended_at) WHERE state IN {TERMINAL_SQL}",
    """
    CREATE TABLE task_runs (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        execution_id TEXT NOT NULL REFERENCES executions (id),
        position INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        input_content_type TEXT NOT NULL,
        depends_on TEXT NOT NULL,
        timeout_us BIGINT,
        retry_policy TEXT NOT NULL,
        state TEXT NOT NULL,
        reason_code TEXT,
        reason_message TEXT,
        pending_cancel TEXT,
        progress TEXT,
        not_before BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        started_at BIGINT,
        ended_at BIGINT,
        attempts TEXT NOT NULL,
        schedule_to_start_us BIGINT,
        UNIQUE (execution_id, position)
    )
    """,
    "CREATE INDEX task_runs_pending ON task_runs (updated_at, seq) INCLUDE (execution_id, id, handler) "
    "WHERE state = 'PENDING'",
    "CREATE INDEX task_runs_by_handler ON task_runs (handler, execution_id)",
    f"CREATE INDEX task_runs_not_cold ON task_runs (execution_id) WHERE {_NOT_COLD_TASK_RUN_SQL_V1}",
    """
    CREATE TABLE task_run_inputs (
        task_run_id TEXT PRIMARY KEY REFERENCES task_runs (id),
        data BYTEA NOT NULL
    )
    """,
    """
    CREATE TABLE events (
        execution_id TEXT NOT NULL REFERENCES executions (id),
        sequence BIGINT NOT NULL,
        time BIGINT NOT NULL,
        kind TEXT NOT NULL,
        body BYTEA NOT NULL,
        PRIMARY KEY (execution_id, sequence)
    )
    """,
)

# Version 2: schedules, each one JSON document by name (a few rows, all read on start).
_SCHEMA_V2: Final = ("CREATE TABLE schedules (name TEXT PRIMARY KEY, body TEXT NOT NULL)",)

# Version 3: flow control (see the module's docstring; the reasons are those of SQLite's version 8).
_SCHEMA_V3: Final = (
    "ALTER TABLE task_runs ADD COLUMN priority INTEGER, ADD COLUMN concurrency_key TEXT, "
    "ADD COLUMN concurrency_limit INTEGER, ADD COLUMN fairness_key TEXT, ADD COLUMN rate_limit TEXT, "
    "ADD COLUMN rate_limit_key TEXT",
    "DROP INDEX task_runs_not_cold",
    f"CREATE INDEX task_runs_not_cold ON task_runs (execution_id) WHERE {NOT_COLD_TASK_RUN_SQL}",
)

# Version 4: active-active replicas (`_postgres_replicas`): who holds each execution and who claimed it, the mail
# between replicas and the leader's row. (`taskwire_replicas`, the replicas' leases, is made before migrating, as
# `taskwire_owner`.)
_SCHEMA_V4: Final = (
    "ALTER TABLE executions ADD COLUMN holder TEXT NOT NULL DEFAULT '', ADD COLUMN claimed_by TEXT NOT NULL DEFAULT ''",
    f"CREATE INDEX executions_held ON executions (holder, seq) WHERE state NOT IN {TERMINAL_SQL}",
    "CREATE INDEX executions_claimed ON executions (claimed_by) WHERE claimed_by <> ''",
    "CREATE TABLE taskwire_mail (id BIGSERIAL PRIMARY KEY, recipient TEXT NOT NULL, kind TEXT NOT NULL, "
    "body JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE INDEX taskwire_mail_by_recipient ON taskwire_mail (recipient, id)",
    "CREATE TABLE taskwire_leader (id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, "
    "epoch BIGINT NOT NULL, lease_until TIMESTAMPTZ NOT NULL)",
    "INSERT INTO taskwire_leader (id, holder, epoch, lease_until) VALUES (1, '', 0, '-infinity')",
)

# Version 5: the workers connected to each replica, as it last published them (`_postgres_replicas`).
_SCHEMA_V5: Final = (
    "CREATE TABLE taskwire_workers (replica TEXT PRIMARY KEY, workers JSONB NOT NULL, "
    "published_at TIMESTAMPTZ NOT NULL DEFAULT now())",
)

# Version 6: the drains each replica keeps for worker instances, published with its workers.
_SCHEMA_V6: Final = ("ALTER TABLE taskwire_workers ADD COLUMN drains JSONB NOT NULL DEFAULT '[]'::jsonb",)

# MIGRATIONS[n] takes a database from version n to n + 1 (statements run in order, in the one transaction).
# A later schema appends its step here; SCHEMA_VERSION follows.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    _SCHEMA_V1,
    _SCHEMA_V2,
    _SCHEMA_V3,
    _SCHEMA_V4,
    _SCHEMA_V5,
    _SCHEMA_V6,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


_TABLES: Final = ("executions", "task_runs", "task_run_inputs", "events", "schedules")


async def analyze_if_never_analyzed(conn: Any) -> None:
    """ANALYZE the tables PostgreSQL has no statistics of yet (autovacuum analyzes them later on its own).

    Without statistics the planner guesses from the tables' sizes and may scan whole tables for a lookup
    by ids: after a bulk of work written just before a restart, recovery and the first reads would pay it.
    """
    rows = await conn.fetch(
        "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY($1::text[]) "
        "AND last_analyze IS NULL AND last_autoanalyze IS NULL AND n_live_tup + n_dead_tup > 0",
        list(_TABLES),
    )
    for row in rows:
        await conn.execute(f"ANALYZE {row[0]}")


async def migrate(
    conn: Any,
    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS,
    *,
    before_commit: Callable[[Any], Awaitable[None]] | None = None,
) -> int:
    """Bring the schema to `len(migrations)` in one transaction under the migration lock; return the version found.

    `conn` is an asyncpg connection outside a transaction. Safe to call from several servers at once: each
    waits for the lock and reads the version only once it holds it. `before_commit(conn)` runs last inside the
    transaction and may refuse it by raising: the store's epoch check, so that a server another one took over
    from while it was on its way here migrates nothing under the new holder.
    """
    target = len(migrations)
    async with conn.transaction():
        await conn.execute(NO_STATEMENT_TIMEOUT)
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT_S)
        await conn.execute("CREATE TABLE IF NOT EXISTS taskwire_schema (version INTEGER NOT NULL)")
        found = await conn.fetchval("SELECT version FROM taskwire_schema")
        if found is None:
            if await conn.fetchval("SELECT to_regclass('executions') IS NOT NULL"):
                raise StoreError("the database has a table `executions` that taskwire did not make")
            await conn.execute("INSERT INTO taskwire_schema (version) VALUES (0)")
            found = 0
        if found > target:
            raise StoreError(f"the database has schema version {found}, newer than this server supports ({target})")
        for version in range(found, target):
            for statement in migrations[version]:
                await conn.execute(statement, timeout=MIGRATION_TIMEOUT_S)
        await conn.execute("UPDATE taskwire_schema SET version = $1", target)
        if before_commit is not None:
            await before_commit(conn)
    return int(found)
