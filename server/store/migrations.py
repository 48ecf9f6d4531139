"""Numbered schema migrations for each dialect, applied in order at start-up and recorded in schema_migrations.

Rules for adding one: append with the next number to BOTH lists, never edit an applied one, and keep it
additive (new tables, columns with defaults, indexes), because during a rolling upgrade replicas running
the previous release keep using the migrated schema.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("workflow.store")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: its number, what it does, and its statements (applied in one transaction)."""

    version: int
    description: str
    statements: tuple[str, ...]


# Key of the PostgreSQL advisory lock serialising migrations: this constant plus a hash of the schema,
# so replicas sharing a schema wait for each other and separate schemas (tests) do not.
ADVISORY_LOCK_CLASS = 0x57464C57  # "WFLW"

MIGRATIONS_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
    "description TEXT NOT NULL, applied_at TEXT NOT NULL)",
    "postgres": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
    "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
}

SQLITE: tuple[Migration, ...] = (
    # `steps`: JSON, one [name, type, status, duration_ms, error] array per step (see sql.EXECUTION_COLUMNS).
    Migration(
        1,
        "executions and their steps",
        (
            "CREATE TABLE executions (id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, workflow_type TEXT NOT NULL, "
            "status TEXT NOT NULL, started_at TEXT NOT NULL, duration_ms REAL NOT NULL, error TEXT, result TEXT, "
            "steps TEXT NOT NULL DEFAULT '[]')",
            "CREATE INDEX executions_started ON executions (started_at DESC, id DESC)",
            "CREATE INDEX executions_pipeline ON executions (pipeline, started_at DESC, id DESC)",
            "CREATE INDEX executions_status ON executions (status, started_at DESC, id DESC)",
        ),
    ),
    Migration(
        2,
        "components",
        (
            "CREATE TABLE components (id TEXT PRIMARY KEY, source TEXT NOT NULL, sha256 TEXT NOT NULL, "
            "version INTEGER NOT NULL, updated_at TEXT NOT NULL, updated_by TEXT NOT NULL, "
            "deleted INTEGER NOT NULL DEFAULT 0)",
        ),
    ),
    Migration(
        3,
        "audit log",
        (
            "CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT NOT NULL, "
            "action TEXT NOT NULL, target TEXT, client_address TEXT, detail TEXT)",
            "CREATE INDEX audit_log_target ON audit_log (target, id DESC)",
        ),
    ),
    Migration(
        4,
        "component versions each replica serves",
        (
            "CREATE TABLE replica_components (replica TEXT NOT NULL, component TEXT NOT NULL, version INTEGER, "
            "sha256 TEXT, status TEXT NOT NULL, error TEXT, reported_at TEXT NOT NULL, "
            "PRIMARY KEY (replica, component))",
        ),
    ),
    # Times are seconds since the epoch (float): one representation for both dialects and cheap to compare.
    Migration(
        5,
        "the durable queue and its de-duplication keys",
        (
            "CREATE TABLE queue_jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, pipeline TEXT NOT NULL, "
            "workflow_type TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
            "state TEXT NOT NULL, enqueued_at REAL NOT NULL, available_at REAL NOT NULL, "
            "dedupe_key TEXT, receipt TEXT, claimed_by TEXT, last_error TEXT)",
            "CREATE INDEX queue_jobs_due ON queue_jobs (available_at) WHERE state <> 'dead'",
            "CREATE INDEX queue_jobs_dead ON queue_jobs (enqueued_at) WHERE state = 'dead'",
            "CREATE TABLE queue_dedupe (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
            "CREATE INDEX queue_dedupe_expiry ON queue_dedupe (expires_at)",
        ),
    ),
    # Every stored version of every component (deletions too), for the admin UI's history and diffs; the
    # versions already stored are copied in. `detail`: an execution's payload, step outputs and component
    # versions, as one compact JSON value (server/store/detail.py), so recording stays one row per execution.
    Migration(
        6,
        "component version history and execution details",
        (
            "CREATE TABLE component_versions (id TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL, "
            "source TEXT NOT NULL, at TEXT NOT NULL, who TEXT NOT NULL, origin TEXT NOT NULL, "
            "deleted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (id, version))",
            "INSERT INTO component_versions (id, version, sha256, source, at, who, origin, deleted) "
            "SELECT id, version, sha256, source, updated_at, updated_by, 'store', deleted FROM components",
            "ALTER TABLE executions ADD COLUMN detail TEXT",
            "CREATE INDEX audit_log_who ON audit_log (who, id DESC)",
        ),
    ),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "executions and their steps",
        (
            "CREATE TABLE executions (id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, workflow_type TEXT NOT NULL, "
            "status TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL, duration_ms DOUBLE PRECISION NOT NULL, "
            "error JSONB, result JSONB, steps JSONB NOT NULL DEFAULT '[]')",
            "CREATE INDEX executions_started ON executions (started_at DESC, id DESC)",
            "CREATE INDEX executions_pipeline ON executions (pipeline, started_at DESC, id DESC)",
            "CREATE INDEX executions_status ON executions (status, started_at DESC, id DESC)",
        ),
    ),
    Migration(
        2,
        "components",
        (
            "CREATE TABLE components (id TEXT PRIMARY KEY, source TEXT NOT NULL, sha256 TEXT NOT NULL, "
            "version INTEGER NOT NULL, updated_at TIMESTAMPTZ NOT NULL, updated_by TEXT NOT NULL, "
            "deleted BOOLEAN NOT NULL DEFAULT FALSE)",
        ),
    ),
    Migration(
        3,
        "audit log",
        (
            "CREATE TABLE audit_log (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at TIMESTAMPTZ NOT NULL, "
            "who TEXT NOT NULL, action TEXT NOT NULL, target TEXT, client_address TEXT, detail JSONB)",
            "CREATE INDEX audit_log_target ON audit_log (target, id DESC)",
        ),
    ),
    Migration(
        4,
        "component versions each replica serves",
        (
            "CREATE TABLE replica_components (replica TEXT NOT NULL, component TEXT NOT NULL, version INTEGER, "
            "sha256 TEXT, status TEXT NOT NULL, error TEXT, reported_at TIMESTAMPTZ NOT NULL, "
            "PRIMARY KEY (replica, component))",
        ),
    ),
    # Times are seconds since the epoch (float): one representation for both dialects and cheap to compare.
    Migration(
        5,
        "the durable queue and its de-duplication keys",
        (
            "CREATE TABLE queue_jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, pipeline TEXT NOT NULL, "
            "workflow_type TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
            "state TEXT NOT NULL, enqueued_at DOUBLE PRECISION NOT NULL, available_at DOUBLE PRECISION NOT NULL, "
            "dedupe_key TEXT, receipt TEXT, claimed_by TEXT, last_error TEXT)",
            "CREATE INDEX queue_jobs_due ON queue_jobs (available_at) WHERE state <> 'dead'",
            "CREATE INDEX queue_jobs_dead ON queue_jobs (enqueued_at) WHERE state = 'dead'",
            "CREATE TABLE queue_dedupe (key TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX queue_dedupe_expiry ON queue_dedupe (expires_at)",
        ),
    ),
    Migration(
        6,
        "component version history and execution details",
        (
            "CREATE TABLE component_versions (id TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL, "
            "source TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, who TEXT NOT NULL, origin TEXT NOT NULL, "
            "deleted BOOLEAN NOT NULL DEFAULT FALSE, PRIMARY KEY (id, version))",
            "INSERT INTO component_versions (id, version, sha256, source, at, who, origin, deleted) "
            "SELECT id, version, sha256, source, updated_at, updated_by, 'store', deleted FROM components",
            "ALTER TABLE executions ADD COLUMN detail JSONB",
            "CREATE INDEX audit_log_who ON audit_log (who, id DESC)",
        ),
    ),
)

LATEST = max(m.version for m in SQLITE)


def pending(migrations: Iterable[Migration], applied: set[int], *, store: str) -> list[Migration]:
    """The migrations not yet in `applied`, in order; warns when the database is ahead of this release."""
    known = sorted(migrations, key=lambda m: m.version)
    newer = sorted(v for v in applied if v > known[-1].version)
    if newer:
        # A newer replica migrated first (rolling upgrade): migrations are additive, so keep going.
        log.warning(
            "%s schema is at version %d, newer than this release knows (%d); continuing",
            store,
            newer[-1],
            known[-1].version,
        )
    return [m for m in known if m.version not in applied]
