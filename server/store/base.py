"""The store interface and its rows: executions with their steps, components, and the audit log."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.executor import Outcome
    from .sql import Record

# A page never holds more than this many executions, whatever the caller asks for.
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class StepRow:
    """How one step of a recorded execution went."""

    name: str
    type: str
    status: str
    duration_ms: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """One finished execution; `started_at` is timezone-aware UTC, `result` any JSON value."""

    id: str
    pipeline: str
    workflow_type: str
    status: str
    started_at: datetime
    duration_ms: float
    error: dict[str, Any] | None = None
    result: Any = None
    steps: tuple[StepRow, ...] = ()
    # The payload, step outputs and component versions (store/detail.py); None when not kept.
    detail: Any = None


@dataclass(frozen=True, slots=True)
class ComponentRow:
    """The stored source of one component; `version` grows by one on every change, deletes included."""

    id: str
    source: str
    sha256: str
    version: int
    updated_at: datetime
    updated_by: str
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class ComponentVersion:
    """Which version of a component the store holds, without its source."""

    id: str
    sha256: str
    version: int
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One stored version of a component: who made it, when and from where (`origin`: api, file or store)."""

    id: str
    version: int
    sha256: str
    at: datetime
    who: str
    origin: str
    deleted: bool = False
    source: str | None = None  # only when one version is asked for


# Versions of one component kept in the history; older ones are pruned as new ones are stored.
HISTORY_KEPT = 100


def origin_of(who: str) -> str:
    """Where a component change came from, by who made it: a file, a replica's upload, or an API call."""
    if who.startswith("file@"):
        return "file"
    if who.startswith("replica@"):
        return "store"
    return "api"


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """What to list: each set field narrows the page (`since` inclusive, `until` exclusive, `error` a substring)."""

    pipeline: str | None = None
    status: str | None = None
    workflow_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One entry of the audit log: who did what to which target, when, and from where."""

    id: int
    at: datetime
    who: str
    action: str
    target: str | None
    client_address: str | None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ReplicaComponent:
    """What one replica serves for one component: the store version it applied, or its error."""

    replica: str
    component: str
    version: int | None
    sha256: str | None
    status: str  # "serving" or "error"
    error: str | None = None
    reported_at: datetime | None = None


class InvalidCursor(ValueError):
    """A pagination cursor that this store did not hand out (the admin API answers 400)."""


class Store(abc.ABC):
    """One small async interface over SQLite (embedded) and PostgreSQL."""

    kind: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (or create the pool) and apply pending migrations; calling it again does nothing."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection; the store can be opened again afterwards."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise when the database cannot answer a trivial query (for /healthz and outage detection)."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The highest migration applied to the database (0 before any)."""

    @abc.abstractmethod
    async def record_executions(self, rows: Sequence[ExecutionRow | Outcome | Record]) -> None:
        """Insert or replace executions in one transaction, the last of an id winning (rows, outcomes, Records)."""

    @abc.abstractmethod
    async def get_execution(self, id: str) -> ExecutionRow | None:
        """One execution with its steps, or None."""

    @abc.abstractmethod
    async def list_executions(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        before: str | None = None,
        workflow_type: str | None = None,
        error: str | None = None,
    ) -> tuple[list[ExecutionRow], str | None]:
        """Executions newest first, filtered (`since` inclusive, `until` exclusive), and the next page's cursor.

        `before` is a cursor from a previous call (InvalidCursor if it is not one); the returned cursor is
        None on the last page. `limit` is clamped to 1..MAX_PAGE. `error` matches text in the error.
        """

    @abc.abstractmethod
    async def prune_executions(self, older_than: datetime) -> int:
        """Delete executions started before `older_than`; return how many went."""

    @abc.abstractmethod
    async def list_components(self, *, include_deleted: bool = False) -> list[ComponentRow]:
        """Every stored component, ordered by id."""

    @abc.abstractmethod
    async def component_versions(self) -> list[ComponentVersion]:
        """The version of every stored component, deleted ones too, ordered by id: cheap to ask often."""

    @abc.abstractmethod
    async def get_component(self, id: str) -> ComponentRow | None:
        """One component (soft-deleted ones too: check `deleted`), or None."""

    @abc.abstractmethod
    async def put_component(self, id: str, source: str, sha256: str, updated_by: str) -> ComponentRow:
        """Insert or update a component atomically; the version is the previous one plus one (1 when new)."""

    @abc.abstractmethod
    async def delete_component(self, id: str, deleted_by: str) -> ComponentRow | None:
        """Soft-delete a component (version plus one); None when absent or already deleted."""

    @abc.abstractmethod
    async def report_replica(self, replica: str, components: Sequence[ReplicaComponent]) -> None:
        """Replace everything `replica` reported before by `components`, stamped now, in one transaction."""

    @abc.abstractmethod
    async def list_replicas(self, *, since: datetime) -> list[ReplicaComponent]:
        """What each replica that reported at or after `since` serves, ordered by component then replica."""

    @abc.abstractmethod
    async def audit(
        self,
        who: str,
        action: str,
        target: str | None,
        client_address: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry to the audit log."""

    @abc.abstractmethod
    async def list_audit(
        self, *, limit: int = 100, target: str | None = None, who: str | None = None, before: int | None = None
    ) -> list[AuditRow]:
        """The newest audit entries first, optionally for one target and one actor, with ids below `before`."""

    @abc.abstractmethod
    async def component_history(self, id: str) -> list[HistoryRow]:
        """The stored versions of a component, newest first, without their sources."""

    @abc.abstractmethod
    async def component_version(self, id: str, version: int) -> HistoryRow | None:
        """One stored version with its source, or None when it is not (or no longer) kept."""


def execution_row(outcome: Outcome) -> ExecutionRow:
    """The row to record for a finished pipeline execution (the result only when it succeeded)."""
    try:
        started = datetime.fromisoformat(outcome.started_at)
    except ValueError:  # never run far enough to be stamped
        started = datetime.now(UTC)
    failed = outcome.error is not None
    return ExecutionRow(
        id=outcome.execution_id,
        pipeline=outcome.pipeline,
        workflow_type=outcome.workflow_type,
        status=outcome.status,
        started_at=started,
        duration_ms=outcome.duration * 1000,
        error=outcome.error.to_json() if outcome.error is not None else None,
        result=None if failed else outcome.result,
        steps=tuple(StepRow(s.name, s.type, s.status, s.duration * 1000, s.error) for s in outcome.steps),
    )
