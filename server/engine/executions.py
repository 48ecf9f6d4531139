"""Recent queued executions kept in memory, so `GET /executions/{id}` follows them from queued to finished."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .executor import Outcome


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class ExecutionRecord:
    """The status of one queued execution, then its result."""

    id: str
    pipeline: str
    workflow_type: str
    status: str = "queued"
    submitted_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    outcome: Outcome | None = None

    def to_json(self) -> dict[str, Any]:
        """The body of `GET /executions/{id}` on the public listener: status, then result or error, nothing else."""
        body: dict[str, Any] = {"id": self.id, "pipeline": self.pipeline, "status": self.status}
        if self.outcome is not None:
            if self.outcome.error is not None:
                body["error"] = self.outcome.error.to_json()
            else:
                body["result"] = self.outcome.result
        return body


class ExecutionLog:
    """A bounded, insertion-ordered map of recent executions; the oldest finished ones go first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, ExecutionRecord] = OrderedDict()

    def submitted(self, execution_id: str, pipeline: str, workflow_type: str) -> ExecutionRecord:
        """Record a newly queued execution."""
        record = ExecutionRecord(execution_id, pipeline, workflow_type, submitted_at=_now())
        self._records[execution_id] = record
        if len(self._records) > self.capacity:
            self._evict()
        return record

    def _evict(self) -> None:
        """Drop the oldest finished record; only when none has finished, the oldest of all."""
        for key, old in self._records.items():
            if old.outcome is not None:
                del self._records[key]
                return
        self._records.popitem(last=False)

    def started(self, execution_id: str) -> None:
        """Mark an execution as running."""
        record = self._records.get(execution_id)
        if record is not None:
            record.status, record.started_at = "running", _now()

    def retrying(self, execution_id: str) -> None:
        """An attempt failed and the job waits in the queue for the next."""
        record = self._records.get(execution_id)
        if record is not None:
            record.status = "queued"

    def finished(self, outcome: Outcome, status: str | None = None) -> None:
        """Store the outcome of an execution (`status` overrides the outcome's, e.g. `dead`)."""
        record = self._records.get(outcome.execution_id)
        if record is not None:
            record.status, record.finished_at, record.outcome = status or outcome.status, _now(), outcome

    def get(self, execution_id: str) -> ExecutionRecord | None:
        """The record for `execution_id`, if still kept."""
        return self._records.get(execution_id)
