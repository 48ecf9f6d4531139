"""The store on both backends (SQLite always, PostgreSQL when reachable), the recorder and retention."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from server.engine.context import Response
from server.engine.executor import Outcome, StepRecord
from server.errors import StepError
from server.settings import Database, Settings, SettingsError, from_environment
from server.store import (
    ComponentVersion,
    ExecutionRow,
    InvalidCursor,
    Recorder,
    ReplicaComponent,
    Retention,
    SqliteStore,
    StepRow,
    Store,
    execution_row,
    open_store,
    running_store,
    sql,
)
from server.store.codec import decode_cursor, dump_json, encode_cursor, ts_text
from server.store.detail import DetailPolicy
from server.store.migrations import LATEST, POSTGRES, SQLITE, pending
from server.store.postgres import PostgresStore
from tests.conftest import pg_admin, until

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def new_store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Callable[[], Store]]:
    """A factory of unopened stores sharing one database; all are closed afterwards."""
    dsn = request.getfixturevalue("pg_schema_dsn") if request.param == "postgres" else None
    made: list[Store] = []

    def make() -> Store:
        made.append(PostgresStore(dsn, pool_size=4) if dsn else SqliteStore(tmp_path / "data" / "workflow.db"))
        return made[-1]

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def store(new_store: Callable[[], Store]) -> Store:
    """An opened store (closed by new_store)."""
    opened = new_store()
    await opened.open()
    return opened


def row(
    id: str, *, pipeline: str = "orders", status: str = "success", at: datetime = T0, steps: int = 2, result: Any = None
) -> ExecutionRow:
    """An execution with `steps` steps, the last one failed when the status is not success."""
    failed = status != "success"
    return ExecutionRow(
        id,
        pipeline,
        "http",
        status,
        at,
        12.5,
        {"error": "boom", "step": f"s{steps - 1}"} if failed else None,
        None if failed else (result if result is not None else {"id": id, "items": [1, 2.5, "é"]}),
        tuple(
            StepRow(
                f"s{i}",
                "step.set",
                "error" if failed and i == steps - 1 else "success",
                1.25 * i,
                "boom" if failed and i == steps - 1 else None,
            )
            for i in range(steps)
        ),
    )


def outcome(id: str, *, failed: bool = False, at: str = "2026-01-01T12:00:00.250Z") -> Outcome:
    """A finished execution as the executor leaves it: three steps, the last one failed when `failed`."""
    return Outcome(
        id,
        "orders",
        "http",
        status="error" if failed else "success",
        data={"x": 1},
        response=None if failed else Response(201, {"id": id, "ok": True}),
        error=StepError("bad", step="s2") if failed else None,
        started_at=at,
        duration=0.0125,
        steps=[
            StepRecord("s0", "step.set", "success", 0.001),
            StepRecord("s1", "step.set", "success", 0.0025),
            StepRecord("s2", "step.fail", "error", 0.003, "bad")
            if failed
            else StepRecord("s2", "step.json_response", "success", 0.003),
        ],
    )


async def fetch(store: Store, id: str) -> ExecutionRow:
    """An execution that must exist."""
    found = await store.get_execution(id)
    assert found is not None, id
    return found


async def all_ids(store: Store, **filters: Any) -> list[str]:
    """Every execution id matching the filters, newest first, following the cursors."""
    ids: list[str] = []
    cursor = None
    while True:
        page, cursor = await store.list_executions(limit=4, before=cursor, **filters)
        ids += [r.id for r in page]
        if cursor is None:
            return ids


# --- migrations ---------------------------------------------------------------------------------------------


async def test_migrations_are_idempotent(new_store: Callable[[], Store]) -> None:
    first = new_store()
    await first.open()
    await first.open()
    assert await first.schema_version() == LATEST
    await first.record_executions([row("kept")])
    await first.close()
    again = new_store()
    await again.open()
    assert await again.schema_version() == LATEST
    assert (await again.get_execution("kept")) == row("kept")


async def test_concurrent_start_up_migrates_once(new_store: Callable[[], Store]) -> None:
    stores = [new_store() for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    assert [await s.schema_version() for s in stores] == [LATEST] * 4


def test_migration_lists_match_and_newer_schemas_are_tolerated(caplog: pytest.LogCaptureFixture) -> None:
    assert [(m.version, m.description) for m in SQLITE] == [(m.version, m.description) for m in POSTGRES]
    assert [m.version for m in SQLITE] == list(range(1, LATEST + 1))
    assert [m.version for m in pending(SQLITE, {1}, store="sqlite")] == list(range(2, LATEST + 1))
    with caplog.at_level(logging.WARNING):
        assert pending(SQLITE, set(range(1, LATEST + 2)), store="sqlite") == []
    assert "newer than this release" in caplog.text


# --- executions ---------------------------------------------------------------------------------------------


async def test_execution_round_trip(store: Store) -> None:
    ok, failed = row("ok", result={"nested": {"list": [1, None, True]}, "text": "ünï 😀"}), row("bad", status="error")
    await store.record_executions([ok, failed])
    assert await store.get_execution("ok") == ok
    assert await store.get_execution("bad") == failed
    assert (await fetch(store, "ok")).started_at.tzinfo == UTC
    assert await store.get_execution("missing") is None
    local = replace(ok, id="local", started_at=datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    await store.record_executions([local])
    assert (await fetch(store, "local")).started_at == T0


async def test_recording_again_replaces_the_execution_and_its_steps(store: Store) -> None:
    await store.record_executions([row("x", steps=3)])
    await store.record_executions([row("x", status="error", steps=1), row("y"), row("y", steps=4)])
    assert await store.get_execution("x") == row("x", status="error", steps=1)
    assert len((await fetch(store, "y")).steps) == 4


async def test_values_json_cannot_hold_are_stored_anyway(store: Store) -> None:
    odd = replace(
        row("odd"),
        result={"nan": float("nan"), "nul": "a\x00b", "half": "x\ud800", "when": T0, 1: {2}},
        steps=(StepRow("s\x00", "t", "error", float("inf"), "bad \x00 byte"),),
    )
    await store.record_executions([odd])
    stored = await fetch(store, "odd")
    assert stored.result == {"nan": None, "nul": "a\ufffdb", "half": "x?", "when": str(T0), "1": "{2}"}
    assert stored.steps == (StepRow("s\ufffd", "t", "error", 0.0, "bad \ufffd byte"),)


async def test_outcomes_are_stored_as_execution_row_reads_them(store: Store) -> None:
    plain = outcome("plain")
    plain.response = None  # no step answered: the result is the final data
    unstamped = Outcome("unstamped", "p", "manual")  # never ran far enough to get a start time
    done = [
        outcome("ok"),
        outcome("bad", failed=True),
        plain,
        outcome("twice"),
        row("a-row"),
        outcome("twice", failed=True),
    ]
    await store.record_executions([*done, unstamped])
    for item in done[:3] + done[5:]:
        assert await store.get_execution(item.execution_id) == execution_row(item)  # the last "twice" won
    assert await store.get_execution("a-row") == row("a-row")
    assert (await fetch(store, "ok")).started_at == T0 + timedelta(milliseconds=250)
    assert ((await fetch(store, "bad")).result, (await fetch(store, "plain")).result) == (None, {"x": 1})
    assert abs((await fetch(store, "unstamped")).started_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_odd_values_leave_the_rest_of_the_batch_alone(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Three statements in one transaction, on either store.
    monkeypatch.setattr("server.store.postgres._CHUNK", 2)
    monkeypatch.setattr("server.store.sqlite._ROWS_PER_INSERT", 2)
    odd = replace(row("odd"), pipeline="or\x00ders", workflow_type="ht\ud800tp")
    emoji = row("emoji", result={"text": "ünï 😀"})  # JSON escapes 😀 as a surrogate pair: kept as it is
    batch = [row("a"), odd, emoji, row("b"), row("c", status="error")]
    await store.record_executions(batch)
    assert await fetch(store, "odd") == replace(odd, pipeline="or\ufffdders", workflow_type="ht?tp")
    for kept in (batch[0], *batch[2:]):
        assert await fetch(store, kept.id) == kept


async def test_sqlite_keeps_steps_as_one_json_column(tmp_path: Any) -> None:
    store = SqliteStore(tmp_path / "workflow.db")
    await store.open()
    await store.record_executions([row("x", status="error")])
    await store.close()
    with closing(sqlite3.connect(tmp_path / "workflow.db")) as db:
        # The layout SQL readers rely on: one [name, type, status, duration_ms, error] array per step.
        assert db.execute("SELECT steps FROM executions").fetchall() == [
            ('[["s0","step.set","success",0.0,null],["s1","step.set","error",1.25,"boom"]]',)
        ]
        assert "execution_steps" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        # A new file gets big pages (cheaper random-id inserts) and WAL.
        assert db.execute("PRAGMA page_size").fetchone()[0] == 16384
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_list_filters(store: Store) -> None:
    await store.record_executions(
        [
            row("a", at=T0),
            row("b", at=T0 + timedelta(minutes=1), status="error"),
            row("c", at=T0 + timedelta(minutes=2), pipeline="billing"),
            row("d", at=T0 + timedelta(minutes=3)),
        ]
    )
    assert await all_ids(store) == ["d", "c", "b", "a"]
    assert await all_ids(store, pipeline="orders") == ["d", "b", "a"]
    assert await all_ids(store, status="error") == ["b"]
    assert await all_ids(store, since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == ["c", "b"]
    assert await all_ids(store, pipeline="orders", since=T0 + timedelta(seconds=1)) == ["d", "b"]
    assert await all_ids(store, pipeline="nothing") == []


async def test_pagination_has_no_gaps_or_repeats(store: Store) -> None:
    # Groups of three share a start time: the id breaks the tie, so no row sits on a page boundary twice.
    rows = [row(f"e{i:02d}", at=T0 + timedelta(seconds=i // 3), steps=i % 3) for i in range(23)]
    await store.record_executions(rows)
    expected = [r.id for r in sorted(rows, key=lambda r: (r.started_at, r.id), reverse=True)]
    pages, cursor = [], None
    while True:
        page, cursor = await store.list_executions(limit=5, before=cursor)
        pages.append(page)
        if cursor is None:
            break
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [r.id for p in pages for r in p] == expected
    assert {r.id: r for p in pages for r in p} == {r.id: r for r in rows}  # steps come along
    assert (await store.list_executions(limit=23))[1] is None
    assert len((await store.list_executions(limit=0))[0]) == 1
    with pytest.raises(InvalidCursor):
        await store.list_executions(before="not-a-cursor")


async def test_prune_deletes_old_executions_with_their_steps(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql, "PRUNE_CHUNK", 2)  # several chunks with few rows
    monkeypatch.setattr(sql, "PRUNE", sql.PRUNE.replace("LIMIT 5000", "LIMIT 2"))
    await store.record_executions(
        [row(f"old{i}", at=T0 - timedelta(days=i + 1)) for i in range(5)] + [row("new", at=T0)]
    )
    assert await store.prune_executions(T0) == 5
    assert await all_ids(store) == ["new"]
    assert await store.prune_executions(T0) == 0
    await store.record_executions([replace(row("old1"), steps=())])
    assert (await fetch(store, "old1")).steps == ()  # no orphaned steps came back


# --- components and audit ----------------------------------------------------------------------------------


async def test_component_versions_and_soft_delete(store: Store) -> None:
    first = await store.put_component("greet", "v1", "sha1", "alice")
    assert (first.version, first.source, first.deleted, first.updated_by) == (1, "v1", False, "alice")
    second = await store.put_component("greet", "v2", "sha2", "bob")
    assert (second.version, second.source, second.sha256, second.updated_by) == (2, "v2", "sha2", "bob")
    assert second.updated_at >= first.updated_at and second.updated_at.tzinfo == UTC
    await store.put_component("audit_me", "x", "shax", "alice")
    deleted = await store.delete_component("greet", "carol")
    assert deleted is not None
    assert (deleted.version, deleted.deleted, deleted.updated_by, deleted.source) == (3, True, "carol", "v2")
    assert await store.delete_component("greet", "carol") is None
    assert await store.delete_component("absent", "carol") is None
    assert await store.get_component("greet") == deleted
    assert [c.id for c in await store.list_components()] == ["audit_me"]
    assert [c.id for c in await store.list_components(include_deleted=True)] == ["audit_me", "greet"]
    assert await store.component_versions() == [
        ComponentVersion("audit_me", "shax", 1, False),
        ComponentVersion("greet", "sha2", 3, True),
    ]
    again = await store.put_component("greet", "v3", "sha3", "dave")
    assert (again.version, again.deleted, again.source) == (4, False, "v3")
    assert (await store.component_versions())[1] == ComponentVersion("greet", "sha3", 4, False)
    assert await store.get_component("absent") is None


async def test_concurrent_puts_each_get_their_own_version(store: Store) -> None:
    rows = await asyncio.gather(*(store.put_component("race", f"v{i}", "sha", "x") for i in range(8)))
    assert sorted(r.version for r in rows) == list(range(1, 9))


async def test_audit_log(store: Store) -> None:
    await store.audit("alice", "component.put", "greet", "10.0.0.1", {"version": 1})
    await store.audit("bob", "component.delete", "greet", None)
    await store.audit("bob", "token.refused", None, "::1", {"reason": "expired"})
    entries = await store.list_audit()
    assert [(e.who, e.action, e.target, e.client_address, e.detail) for e in entries] == [
        ("bob", "token.refused", None, "::1", {"reason": "expired"}),
        ("bob", "component.delete", "greet", None, None),
        ("alice", "component.put", "greet", "10.0.0.1", {"version": 1}),
    ]
    assert entries[0].id > entries[1].id and entries[0].at.tzinfo == UTC
    assert [e.action for e in await store.list_audit(target="greet", limit=1)] == ["component.delete"]


async def test_replica_reports_replace_earlier_ones_and_age_out(store: Store) -> None:
    serving = ReplicaComponent("r1", "greet", 3, "a" * 64, "serving")
    await store.report_replica("r1", [serving, ReplicaComponent("r1", "old", 1, "b" * 64, "serving")])
    await store.report_replica("r2", [ReplicaComponent("r2", "greet", 2, "c" * 64, "error", "line 3: boom")])
    await store.report_replica("r1", [serving])  # "old" went away on r1
    before = datetime.now(UTC) - timedelta(minutes=1)
    rows = await store.list_replicas(since=before)
    assert [(r.replica, r.component, r.version, r.status, r.error) for r in rows] == [
        ("r1", "greet", 3, "serving", None),
        ("r2", "greet", 2, "error", "line 3: boom"),
    ]
    assert all(r.reported_at is not None and r.reported_at >= before for r in rows)
    assert await store.list_replicas(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    await store.report_replica("r2", [])
    assert [r.replica for r in await store.list_replicas(since=before)] == ["r1"]


async def test_ping_and_close(new_store: Callable[[], Store]) -> None:
    opened = new_store()
    await opened.open()
    await opened.ping()
    await opened.close()
    with pytest.raises(RuntimeError):
        await opened.ping()


# --- recorder ----------------------------------------------------------------------------------------------


class Wrapper:
    """A store stand-in around a real one: counts batches, fails on demand."""

    def __init__(
        self,
        store: Store,
        *,
        down: bool = False,
        refuse: Callable[[sql.Record], bool] | None = None,
        read_only: bool = False,
    ) -> None:
        self.store, self.down, self.refuse, self.read_only = store, down, refuse, read_only
        self.batches: list[int] = []
        self.gate: asyncio.Event | None = None

    async def record_executions(self, rows: Sequence[sql.Record]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectionError("database is down")
        if self.read_only or (self.refuse and any(self.refuse(r) for r in rows)):
            raise ValueError("refused")
        self.batches.append(len(rows))
        await self.store.record_executions(rows)

    async def ping(self) -> None:
        if self.down:
            raise ConnectionError("database is down")


async def test_recorder_writes_full_batches_at_once_and_leaves_the_rest_to_the_interval(store: Store) -> None:
    sink = Wrapper(store)
    recorder = Recorder(sink, batch=10, interval=60)
    recorder.start()
    for i in range(25):
        recorder.add(row(f"r{i}"))
    await until(lambda: recorder.flushed == 20)
    await asyncio.sleep(0.05)  # no small commit follows the full ones: the last 5 wait for more, or the interval
    assert sink.batches == [10, 10] and recorder.pending == 5
    await recorder.stop(5)
    assert sink.batches == [10, 10, 5]
    assert len(await all_ids(store)) == 25


async def test_recorder_flushes_on_its_interval_and_everything_on_stop(store: Store) -> None:
    recorder = Recorder(store, batch=100, interval=0.02)
    recorder.start()
    recorder.add(row("soon"))
    await until(lambda: recorder.flushed == 1)
    slow = Recorder(store, batch=100, interval=60)
    slow.start()
    for i in range(7):
        slow.add(row(f"late{i}"))
    await slow.stop(5)
    await recorder.stop(5)
    assert (slow.flushed, slow.pending, slow.abandoned) == (7, 0, 0)
    assert len(await all_ids(store)) == 8


async def test_recorder_keeps_everything_through_an_outage(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    sink = Wrapper(store, down=True)
    recorder = Recorder(sink, batch=8, interval=0.01, max_backoff=0.04)
    recorder.start()
    with caplog.at_level(logging.WARNING, logger="workflow.store.recorder"):
        for i in range(30):
            recorder.add(row(f"o{i:02d}", at=T0 + timedelta(seconds=i)))
        await until(lambda: recorder.failures >= 4)
        assert (recorder.pending, recorder.flushed, recorder.healthy) == (30, 0, False)
        sink.down = False
        await until(lambda: recorder.flushed == 30)
    assert await all_ids(store) == [f"o{i:02d}" for i in reversed(range(30))]
    assert (recorder.dropped, recorder.rejected, recorder.healthy) == (0, 0, True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "not accepting writes" in warnings[0] and "again" in warnings[1]
    await recorder.stop(5)


async def test_recorder_stop_is_bounded_when_the_store_stays_down(store: Store) -> None:
    recorder = Recorder(Wrapper(store, down=True), interval=0.01, max_backoff=0.02)
    recorder.start()
    for i in range(5):
        recorder.add(row(f"lost{i}"))
    started = time.monotonic()
    await recorder.stop(0.2)
    assert time.monotonic() - started < 3.0  # bounded: the store never comes back
    assert (recorder.abandoned, recorder.pending) == (5, 0)
    recorder.add(row("after"))
    assert recorder.dropped == 1


async def test_recorder_overflow_drops_the_oldest(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(store, capacity=5, batch=100, interval=60)
    with caplog.at_level(logging.WARNING, logger="workflow.store.recorder"):
        for i in range(8):
            recorder.add(row(f"f{i}", at=T0 + timedelta(seconds=i)))
    assert (recorder.dropped, recorder.pending) == (3, 5)
    assert len(caplog.records) == 1 and "full" in caplog.records[0].getMessage()
    await recorder.stop(5)
    assert await all_ids(store) == ["f7", "f6", "f5", "f4", "f3"]


async def test_recorder_overflow_during_an_outage_keeps_the_newest(store: Store) -> None:
    sink = Wrapper(store, down=True)
    recorder = Recorder(sink, capacity=10, batch=4, interval=0.01, max_backoff=0.02)
    recorder.start()
    for i in range(13):
        recorder.add(row(f"q{i:02d}", at=T0 + timedelta(seconds=i)))
        await asyncio.sleep(0.005)  # let failed batches go back to the front of the buffer meanwhile
    assert recorder.dropped == 3
    sink.down = False
    await recorder.stop(5)
    assert await all_ids(store) == [f"q{i:02d}" for i in reversed(range(3, 13))]


async def test_recorder_add_never_waits_for_the_store(store: Store) -> None:
    sink = Wrapper(store)
    sink.gate = asyncio.Event()  # every write hangs, as on a stalled database
    recorder = Recorder(sink, capacity=50_000, batch=100, interval=0.01)
    recorder.start()
    recorder.add(row("first"))
    await asyncio.sleep(0.05)  # a write is now stuck in flight
    item = row("hot")
    # A plain function: it cannot wait for anything. Its cost is measured by tests/bench, not timed here.
    assert not inspect.iscoroutinefunction(Recorder.add)
    for _ in range(20_000):
        recorder.add(item)
    assert recorder.pending == 20_001 and not sink.gate.is_set()
    sink.gate.set()
    await recorder.stop(10)
    assert recorder.flushed == 20_001


async def test_recorder_discards_only_rows_the_database_refuses(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(Wrapper(store, refuse=lambda r: r.id == "poison"), batch=10, interval=60)
    for id in ("a", "poison", "b", "c"):
        recorder.add(row(id))
    with caplog.at_level(logging.ERROR, logger="workflow.store.recorder"):
        await recorder.stop(5)
    assert (recorder.flushed, recorder.rejected, recorder.dropped) == (3, 1, 0)
    assert sorted(await all_ids(store)) == ["a", "b", "c"]
    assert "poison" in caplog.text


async def test_recorder_takes_outcomes_and_names_one_refused(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(Wrapper(store, refuse=lambda r: r.id == "poison"), batch=10, interval=60)

    class Broken(StepError):
        def to_json(self) -> dict[str, Any]:
            raise RuntimeError("a defect")

    with caplog.at_level(logging.ERROR, logger="workflow.store.recorder"):
        for done in (outcome("a"), outcome("poison"), outcome("b", failed=True)):
            recorder.add(done)
        recorder.add(replace(outcome("defect"), error=Broken("x")))  # converted at once: must not raise here
        assert recorder.rejected == 1 and "execution defect cannot be recorded" in caplog.text
        await recorder.stop(5)
    assert (recorder.flushed, recorder.rejected) == (2, 2)
    assert await store.get_execution("b") == execution_row(outcome("b", failed=True))
    assert "execution poison (pipeline orders) cannot be recorded" in caplog.text


async def test_recorder_keeps_rows_when_the_database_refuses_every_write(store: Store) -> None:
    sink = Wrapper(store, read_only=True)  # answers pings, refuses writes: a full disk, a read-only replica
    recorder = Recorder(sink, batch=10, interval=0.01, max_backoff=0.02)
    recorder.start()
    for id in ("a", "b", "c"):
        recorder.add(row(id))
    await until(lambda: recorder.failures >= 3)
    assert (recorder.rejected, recorder.pending) == (0, 3)
    sink.read_only = False
    await recorder.stop(5)
    assert recorder.flushed == 3


async def test_postgres_recovers_when_its_connections_are_killed(postgres_dsn: str, pg_schema_dsn: str) -> None:
    name = f"wf_test_{secrets.token_hex(4)}"
    store = PostgresStore(f"{pg_schema_dsn} application_name={name}", pool_size=3)
    await store.open()
    try:
        await asyncio.gather(*(store.ping() for _ in range(3)))  # fill the pool with connections to kill
        pg_admin(
            postgres_dsn, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
        )
        recorder = Recorder(store, interval=0.01)
        recorder.add(row("after-restart"))
        await recorder.stop(5)
        # At most one attempt lands on a dead connection; the retry reconnects at once, without backoff.
        assert (recorder.flushed, recorder.dropped, recorder.healthy) == (1, 0, True)
        assert recorder.failures <= 1
        assert await store.get_execution("after-restart") == row("after-restart")
    finally:
        await store.close()


# --- retention, wiring, conversions ------------------------------------------------------------------------


async def test_retention_prunes_past_history_days(store: Store) -> None:
    now = datetime.now(UTC)
    await store.record_executions([row("ancient", at=now - timedelta(days=10)), row("recent", at=now)])
    assert await Retention(store, 0).prune_once() == 0
    retention = Retention(store, 7, every=0.01)
    retention.start()
    await until(lambda: retention.pruned == 1)
    await retention.stop()
    assert await all_ids(store) == ["recent"]


def test_open_store_picks_the_backend(settings: Settings) -> None:
    embedded = open_store(settings)
    assert isinstance(embedded, SqliteStore) and embedded.path == settings.data_dir / "workflow.db"
    configured = open_store(replace(settings, db=Database(host="db.internal", pool_size=3)))
    assert isinstance(configured, PostgresStore) and (configured.kind, configured.pool_size) == ("postgres", 3)
    assert "host='db.internal'" in configured.dsn


async def test_running_store_records_until_it_stops(settings: Settings) -> None:
    store = open_store(settings)
    recorder = Recorder(store)
    async with running_store(store, recorder, settings) as opened:
        assert opened is store and settings.data_dir.is_dir() and store.kind == "sqlite"
        recorder.add(row("at-shutdown"))
    reopened = SqliteStore(settings.data_dir / "workflow.db")
    await reopened.open()
    assert await reopened.get_execution("at-shutdown") == row("at-shutdown")
    await reopened.close()


def test_execution_row_from_an_outcome() -> None:
    outcome = Outcome(
        "id1",
        "orders",
        "http",
        status="error",
        error=StepError("bad", step="s1"),
        steps=[StepRecord("s0", "step.set", "success", 0.002), StepRecord("s1", "step.fail", "error", 0.5, "bad")],
        started_at="2026-01-01T12:00:00.000Z",
        duration=0.75,
    )
    assert execution_row(outcome) == ExecutionRow(
        "id1",
        "orders",
        "http",
        "error",
        T0,
        750.0,
        {"error": "bad", "step": "s1"},
        None,
        (StepRow("s0", "step.set", "success", 2.0), StepRow("s1", "step.fail", "error", 500.0, "bad")),
    )
    assert execution_row(Outcome("id2", "p", "manual", data={"x": 1})).result == {"x": 1}


def test_codec_cursor_and_timestamps() -> None:
    assert decode_cursor(encode_cursor(T0, "a|b")) == (T0, "a|b")
    assert ts_text(datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))) == "2026-01-01T12:00:00.000000Z"
    assert dump_json(None) is None and dump_json({"a": (1, 2)}) == '{"a":[1,2]}'

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    circular: dict[str, Any] = {}
    circular["self"] = circular
    assert dump_json({"x": Unprintable()}) == '{"x":"<unprintable Unprintable>"}'
    assert str(dump_json(circular)).startswith('{"self":{"self":')
    with pytest.raises(InvalidCursor):
        decode_cursor(encode_cursor(T0, "x")[:-3])


# --------------------------------------------------------------------------- the admin UI's history, filters, details


async def test_component_history_keeps_every_version_with_its_origin(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put_component("greet", "v1", "sha1", "ada")
    await store.put_component("greet", "v2", "sha2", "file@r1")
    await store.put_component("greet", "v3", "sha3", "replica@r2")
    await store.delete_component("greet", "bob")
    history = await store.component_history("greet")
    assert [(h.version, h.sha256, h.who, h.origin, h.deleted, h.source) for h in history] == [
        (4, "sha3", "bob", "api", True, None),
        (3, "sha3", "replica@r2", "store", False, None),
        (2, "sha2", "file@r1", "file", False, None),
        (1, "sha1", "ada", "api", False, None),
    ]
    assert history[0].at.tzinfo == UTC
    second = await store.component_version("greet", 2)
    assert second is not None and (second.source, second.who) == ("v2", "file@r1")
    assert await store.component_version("greet", 9) is None
    assert await store.component_history("other") == []
    # Retention: only the newest HISTORY_KEPT versions of a component stay.
    monkeypatch.setattr(f"server.store.{store.kind}.HISTORY_KEPT", 2)
    await store.put_component("greet", "v5", "sha5", "ada")
    assert [h.version for h in await store.component_history("greet")] == [5, 4]


async def test_audit_pages_by_actor_and_target(store: Store) -> None:
    for who, target in (("ada", "a"), ("bob", "a"), ("ada", "b"), ("ada", "a")):
        await store.audit(who, "component.update", target, None)
    newest = await store.list_audit(who="ada", target="a")
    assert [(e.who, e.target) for e in newest] == [("ada", "a"), ("ada", "a")]
    older = await store.list_audit(who="ada", before=newest[0].id)
    assert [(e.who, e.target) for e in older] == [("ada", "b"), ("ada", "a")]
    assert await store.list_audit(who="nobody") == []


async def test_list_filters_by_trigger_type_and_error_text(store: Store) -> None:
    failed = row("e", at=T0 + timedelta(minutes=1), status="error")
    odd = replace(
        row("f", at=T0 + timedelta(minutes=2), status="error"), error={"error": "Card 50%_declined", "step": "s1"}
    )
    await store.record_executions([row("a", at=T0), failed, odd, replace(row("m", at=T0), workflow_type="manual")])
    assert await all_ids(store, workflow_type="manual") == ["m"]
    assert await all_ids(store, error="BOO") == ["e"]  # case-insensitive, in the error's message
    assert await all_ids(store, error="50%_") == ["f"]  # % and _ are plain text, not patterns
    assert await all_ids(store, error="%") == ["f"]
    assert await all_ids(store, error="step") == []  # the message only, not the error's other fields


async def test_execution_detail_round_trip(store: Store) -> None:
    detail = {"payload": {"x": 1}, "outputs": {"s0": {"y": "é"}}, "components": {"greet": 3}}
    await store.record_executions([replace(row("d"), detail=detail), row("n")])
    stored = await store.get_execution("d")
    assert stored is not None and stored.detail == detail
    plain = await store.get_execution("n")
    assert plain is not None and plain.detail is None


def test_detail_policy_redacts_by_key_words_and_folds_what_is_over_the_cap() -> None:
    done = outcome("x")
    done.trigger = {"user": "ann", "API_KEY": "k", "auth": {"Authorization": "Bearer t", "list": [{"my_token": 1}]}}
    done.outputs = {"s0": {"ok": True}}
    policy = DetailPolicy(["api_key", "authorization", "token", " "], 10_000, lambda types: {"greet": 2})
    assert json.loads(policy.encode(done) or "") == {
        "payload": {
            "user": "ann",
            "API_KEY": "[redacted]",
            "auth": {"Authorization": "[redacted]", "list": [{"my_token": "[redacted]"}]},
        },
        "outputs": {"s0": {"ok": True}},
        "components": {"greet": 2},
        "redacted": True,
    }
    done.rerun_of = "first"
    big = {"blob": "z" * 5000}
    done.trigger, done.outputs = big, {"s0": {"ok": True}, "s1": big}
    folded = json.loads(DetailPolicy([], 1000).encode(done) or "")
    assert folded["truncated"] is True and folded["rerun_of"] == "first"
    assert folded["outputs"]["s0"] == {"ok": True}  # small parts stay whole
    assert folded["payload"] == {"truncated": True, "bytes": 5011, "preview": '{"blob":"' + "z" * 503}
    assert folded["outputs"]["s1"] == folded["payload"]
    assert DetailPolicy(["password"], 0).encode(done) is None  # a cap of 0 keeps no detail


def test_detail_settings_come_from_the_environment() -> None:
    assert from_environment({}).redact_keys == ("password", "secret", "token", "authorization", "api_key", "cookie")
    settings = from_environment({"WORKFLOW_REDACT_KEYS": "pin, ssn", "WORKFLOW_EXECUTION_DETAIL_BYTES": "0"})
    assert (settings.redact_keys, settings.detail_max_bytes) == (("pin", "ssn"), 0)
    with pytest.raises(SettingsError, match="WORKFLOW_EXECUTION_DETAIL_BYTES: '-1' is not a whole number"):
        from_environment({"WORKFLOW_EXECUTION_DETAIL_BYTES": "-1"})
