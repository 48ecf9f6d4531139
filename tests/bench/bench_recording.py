"""Recording cost in-process: CPU per execution of the write-behind Recorder on SQLite and PostgreSQL.

    .venv/bin/python tests/bench/bench_recording.py [--executions 5000] [--batch 2000] [--rounds 7]
        [--backend sqlite|postgres|both] [--pg-dsn DSN] [--prefill 20000,1000000]

Builds finished Outcomes shaped like bench_throughput.py's (pipeline `bench`, 3 successful steps, the
201 response body as result), hands them to a `Recorder(store, batch=--batch)` and stops it, which drains
the buffer in batches: conversion (Outcome -> what the store writes, in `add` or while flushing) plus
`Store.record_executions`, the whole recording path. The figure is this process's CPU time (every
thread: aiosqlite's worker thread too, since the server is pinned to one CPU and that thread competes
with request handling) divided by the number of executions; "in store" is the part spent inside
`record_executions`, "system" the kernel's part (SQLite's file I/O). PostgreSQL's own backend CPU is in
another process and not counted.
For each table size in --prefill there is one database (a new file, or a new schema), filled with that many
executions (time-ordered ids, as the server makes them) and one warm-up batch through the recorder; then the
rounds alternate between the sizes, so a busy machine blurs them alike. It prints the medians, the ratio of
the largest size to the smallest (target: at most 1.3, recording must not slow down as the table grows) and
whether the smallest stays within 5 us per execution. With random ids (before UUIDv7) every batch's rows
landed on pages all over the id index, and the cost grew with the table: 14 us at 20k rows, 37 us at 1M.

PostgreSQL: WORKFLOW_TEST_PG_DSN or --pg-dsn (default host=127.0.0.1 port=5432 user=postgres dbname=test),
in a fresh schema dropped afterwards; skipped with a note when unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import AsyncExitStack, asynccontextmanager, closing
from pathlib import Path
from typing import Any

import _common as c

sys.path.insert(0, str(c.ROOT))  # this checkout's server package, ahead of any installed one

from server.engine.context import Response
from server.engine.executor import Outcome, StepRecord, _utc_now
from server.engine.ids import new_execution_id
from server.store import Recorder, SqliteStore, Store, sql

DEFAULT_DSN = os.environ.get("WORKFLOW_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")


def outcome() -> Outcome:
    """A finished execution as the throughput benchmark's pipeline leaves it."""
    body = {"status": "pending", "total": 19.9, "customer": "c-42"}
    done = Outcome(
        new_execution_id(),
        "bench",
        "http",
        data={"customer_id": "C-42", "total": 19.9, **body},
        response=Response(201, body),
        started_at=_utc_now(),
        duration=0.000412,
    )
    done.steps = [
        StepRecord("validate", "step.validate", "success", 0.000061),
        StepRecord("set", "step.set", "success", 0.000043),
        StepRecord("respond", "step.json_response", "success", 0.000012),
    ]
    return done


class Timed:
    """The store as the recorder's sink, adding up the CPU spent inside record_executions."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cpu = 0.0
        self.batches = 0

    async def record_executions(self, rows: Sequence[Any]) -> None:
        started = time.process_time()
        try:
            await self.store.record_executions(rows)
        finally:
            self.cpu += time.process_time() - started
            self.batches += 1

    async def ping(self) -> None:
        await self.store.ping()


async def one_round(store: Store, count: int, batch: int) -> tuple[float, float, float, float, int]:
    """(CPU us, of which system, in-store CPU us, wall us) per execution, and the batch count."""
    outcomes = [outcome() for _ in range(count)]
    sink = Timed(store)
    recorder = Recorder(sink, capacity=count + 1, batch=batch, interval=3600)
    wall, cpu, times = time.perf_counter(), time.process_time(), os.times()
    for item in outcomes:
        recorder.add(item)  # the recorder may convert here (on the request's path) or while flushing
    await recorder.stop(600)
    cpu, wall, system = time.process_time() - cpu, time.perf_counter() - wall, os.times().system - times.system
    if recorder.flushed != count:
        raise SystemExit(f"recorded {recorder.flushed} of {count} (failures {recorder.failures})")
    return cpu / count * 1e6, system / count * 1e6, sink.cpu / count * 1e6, wall / count * 1e6, sink.batches


async def prefill(store: Store, rows: int) -> None:
    """Write `rows` executions straight to the store, so a round measures recording into a table that size."""
    template = sql.prepare(outcome())
    for start in range(0, rows, 10_000):
        chunk = min(10_000, rows - start)
        await store.record_executions([template._replace(id=new_execution_id()) for _ in range(chunk)])


async def measure(name: str, stores: Callable[[], AsyncContextManager[Store]], args: argparse.Namespace) -> None:
    """One database per table size, prefilled; rounds alternate between them; figures, medians and verdicts."""
    sizes = args.prefill
    results: dict[int, list[tuple[float, float, float, float, int]]] = {size: [] for size in sizes}
    async with AsyncExitStack() as stack:
        opened = {}
        for size in sizes:
            started = time.perf_counter()
            store = opened[size] = await stack.enter_async_context(stores())
            await prefill(store, size)
            await one_round(store, args.batch, args.batch)  # warm-up: caches, the statement, a first batch
            print(f"  {name:8} {size:>9,} rows prefilled in {time.perf_counter() - started:.0f} s")
        for _ in range(args.rounds):
            for size in sizes:
                results[size].append(await one_round(opened[size], args.executions, args.batch))
    medians = {}
    for size in sizes:
        for i, (total, system, inside, wall, batches) in enumerate(results[size], 1):
            print(
                f"  {name:8} {size:>9,} rows, round {i}: {total:6.1f} us CPU/execution (system {system:4.1f}, "
                f"in store {inside:6.1f}), wall {wall:6.1f} us/execution, {batches} batches"
            )
        total, inside = statistics.median(r[0] for r in results[size]), statistics.median(r[2] for r in results[size])
        medians[size] = total
        print(
            f"{name:8} {size:>9,} rows, median: {total:6.1f} us CPU per execution (conversion + record_executions; "
            f"{inside:.1f} inside record_executions); best round {min(r[0] for r in results[size]):.1f}"
        )
    small, large = min(sizes), max(sizes)
    ratio = medians[large] / medians[small]
    if large > small:
        print(
            f"TARGET {'MET' if ratio <= 1.3 else 'MISSED'}: {name} at {large:,} rows / at {small:,} rows "
            f"<= 1.3 ({ratio:.2f})"
        )
    print(
        f"TARGET {'MET' if medians[small] <= 5 else 'MISSED'}: {name} <= 5 us CPU per execution ({medians[small]:.1f})"
    )


def pg_admin(dsn: str, statement: str) -> None:
    """Run one statement in autocommit mode."""
    import psycopg2

    with closing(psycopg2.connect(dsn, connect_timeout=3)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)


@asynccontextmanager
async def sqlite_store() -> AsyncIterator[Store]:
    """An opened SQLite store in a new temp dir, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        store = SqliteStore(Path(tmp) / "workflow.db")
        await store.open()
        try:
            yield store
        finally:
            await store.close()


def postgres_stores(dsn: str) -> Callable[[], AsyncContextManager[Store]]:
    """A factory of opened PostgreSQL stores, each in a new schema dropped afterwards."""
    from server.store.postgres import PostgresStore

    @asynccontextmanager
    async def make() -> AsyncIterator[Store]:
        schema = f"wf_bench_{secrets.token_hex(4)}"
        pg_admin(dsn, f"CREATE SCHEMA {schema}")
        store = PostgresStore(f"{dsn} options='-c search_path={schema}'", pool_size=2)
        try:
            await store.open()
            yield store
        finally:
            await store.close()
            pg_admin(dsn, f"DROP SCHEMA {schema} CASCADE")

    return make


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=Recorder(Timed(None), capacity=1).batch)  # type: ignore[arg-type]
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--pg-dsn", default=DEFAULT_DSN)
    parser.add_argument(
        "--prefill",
        default="20000,1000000",
        help="comma-separated table sizes: executions already recorded when the rounds start (default 20000,1000000)",
    )
    args = parser.parse_args()
    args.prefill = [int(size) for size in args.prefill.split(",")]
    print(
        f"python {sys.version.split()[0]}, {args.executions} executions of 3 steps per round, batches of "
        f"{args.batch}, {args.prefill} already recorded, median of {args.rounds} rounds; "
        f"loadavg {c.loadavg_text()}"
    )
    if args.backend in ("sqlite", "both"):
        await measure("sqlite", sqlite_store, args)
    if args.backend in ("postgres", "both"):
        try:
            pg_admin(args.pg_dsn, "SELECT 1")
        except Exception as exc:
            print(f"postgres skipped: {type(exc).__name__}: {' '.join(str(exc).split())}")
        else:
            await measure("postgres", postgres_stores(args.pg_dsn), args)
    print(f"loadavg after: {c.loadavg_text()}")


if __name__ == "__main__":
    asyncio.run(main())
