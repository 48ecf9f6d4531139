"""Enqueue latency of the durable queue while the recorder writes 2000-row batches into the same database.

    .venv/bin/python tests/bench/bench_enqueue.py [--rate 500] [--seconds 10] [--backend sqlite|postgres|both]
        [--pg-dsn DSN] [--quiet] [--recorded PER_SECOND]

Enqueues one job with a de-duplication key (as a chat event does) every 1/--rate s for --seconds, timing each
call from start to commit, while another task writes 2000-execution batches to the store back to back (the
recorder's worst case), or --recorded executions/s in one batch per 0.5 s as the Recorder does (--quiet:
no writes). Prints p50, p99 and max in ms, and how many recorder
batches went by. PostgreSQL: --pg-dsn or WORKFLOW_TEST_PG_DSN, in a fresh schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from server.queue import Job, Queue
from server.queue.postgres import PostgresQueue
from server.queue.sqlite import SqliteQueue
from server.store import ExecutionRow, SqliteStore, StepRow, Store, sql
from server.store.postgres import PostgresStore

BATCH = 2000
INTERVAL = 0.5  # the Recorder's flush interval


def rows() -> list[ExecutionRow]:
    now = datetime.now(UTC)
    steps = tuple(StepRow(f"s{i}", "step.set", "success", 0.1) for i in range(3))
    return [
        ExecutionRow(secrets.token_hex(16), "bench", "http", "success", now, 1.0, None, {"ok": True}, steps)
        for _ in range(BATCH)
    ]


async def recorder(store: Store, stop: asyncio.Event, batches: list[int], recorded: float) -> None:
    # Converted beforehand, as the Recorder does when executions are added: only new ids are made here.
    size = min(BATCH, int(recorded * INTERVAL)) if recorded else BATCH
    template = sql.records(rows())[:size]
    while not stop.is_set():
        began = time.perf_counter()
        await store.record_executions([r._replace(id=secrets.token_hex(16)) for r in template])
        batches[0] += 1
        if recorded:  # the Recorder's pace: one batch per interval
            await asyncio.sleep(max(0.0, INTERVAL - (time.perf_counter() - began)))


async def measure(store: Store, queue: Queue, rate: float, seconds: float, quiet: bool, recorded: float) -> None:
    await store.open()
    await queue.open()
    stop, batches = asyncio.Event(), [0]
    writer = None if quiet else asyncio.create_task(recorder(store, stop, batches, recorded))
    await asyncio.sleep(0.5)
    latencies: list[float] = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        began = time.perf_counter()
        await queue.enqueue(Job(secrets.token_hex(16), "bench", "messaging", {"n": n}), f"bench:{n}")
        latencies.append((time.perf_counter() - began) * 1000)
    stop.set()
    if writer is not None:
        await writer
    await queue.close()
    await store.close()
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"{queue.backend:8} {len(latencies)} enqueues at {rate:.0f}/s, recorder batches {batches[0]}: "
        f"p50 {cuts[49]:.2f} ms  p99 {cuts[98]:.2f} ms  max {max(latencies):.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--pg-dsn", default=os.environ.get("WORKFLOW_TEST_PG_DSN", "host=127.0.0.1 user=postgres dbname=test")
    )
    parser.add_argument("--quiet", action="store_true", help="no recorder writes meanwhile")
    parser.add_argument(
        "--recorded", type=float, default=0, help="executions/s the recorder writes (0: 2000-row batches back to back)"
    )
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "workflow.db"
            asyncio.run(
                measure(SqliteStore(path), SqliteQueue(path), args.rate, args.seconds, args.quiet, args.recorded)
            )
    if args.backend in ("postgres", "both"):
        schema = f"bench_{secrets.token_hex(4)}"
        admin = psycopg2.connect(args.pg_dsn)
        admin.autocommit = True
        admin.cursor().execute(f"CREATE SCHEMA {schema}")
        dsn = f"{args.pg_dsn} options='-c search_path={schema}'"
        try:
            asyncio.run(
                measure(PostgresStore(dsn), PostgresQueue(dsn), args.rate, args.seconds, args.quiet, args.recorded)
            )
        finally:
            admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
            admin.close()


if __name__ == "__main__":
    main()
