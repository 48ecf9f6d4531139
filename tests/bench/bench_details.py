"""What keeping execution details costs: recording with and without the detail column, in one run.

    .venv/bin/python tests/bench/bench_details.py [--executions 5000] [--rounds 5] [--backend sqlite|postgres|both]

The executions are bench_recording.py's (3 steps, the 201 body as result), given what a real run leaves for
the detail: the trigger payload and each step's output. Each round records them through a Recorder into a
new database twice, without a detail policy (the baseline: what recording cost before details) and with
the default one (WORKFLOW_REDACT_KEYS, 64 KiB cap, component versions looked up), interleaved, and prints
CPU per execution (this process, every thread) for both and their ratio. A last line times the slow path
alone: a payload holding a `password` key, which is redacted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import _common as c
import bench_recording as r

from server.engine.executor import Outcome
from server.settings import REDACT_KEYS
from server.store import Recorder, Store
from server.store.detail import DetailPolicy


def detailed(secret: bool = False) -> Outcome:
    """bench_recording's execution with its trigger payload and step outputs, as the executor leaves them."""
    done = r.outcome()
    done.trigger = {"customer_id": "C-42", "total": 19.9, **({"password": "hunter2"} if secret else {})}
    done.outputs = {"validate": {}, "set": {"status": "pending", "total": 19.9}, "respond": {}}
    return done


def policy() -> DetailPolicy:
    return DetailPolicy(REDACT_KEYS, 65536, lambda types: {})


async def cpu_per_execution(store: Store, count: int, details: DetailPolicy | None, secret: bool = False) -> float:
    outcomes = [detailed(secret) for _ in range(count)]
    recorder = Recorder(store, capacity=count + 1, batch=2000, interval=3600, details=details)
    started = time.process_time()
    for item in outcomes:
        recorder.add(item)
    await recorder.stop(600)
    if recorder.flushed != count:
        raise SystemExit(f"recorded {recorder.flushed} of {count}")
    return (time.process_time() - started) / count * 1e6


async def measure(name: str, stores: object, args: argparse.Namespace) -> None:
    plain, kept, secret = [], [], []
    for _ in range(args.rounds):
        for results, details, has_secret in ((plain, None, False), (kept, policy(), False), (secret, policy(), True)):
            async with stores() as store:  # type: ignore[operator]
                await cpu_per_execution(store, 500, details, has_secret)  # warm-up
                results.append(await cpu_per_execution(store, args.executions, details, has_secret))
    base, with_details, redacted = (statistics.median(x) for x in (plain, kept, secret))
    print(f"{name:8} without details: {base:6.1f} us CPU per execution (median of {args.rounds})")
    print(
        f"{name:8} with details:    {with_details:6.1f} us CPU per execution, {with_details / base:.2f}x the baseline"
    )
    print(f"{name:8} redacting:       {redacted:6.1f} us CPU per execution, {redacted / base:.2f}x the baseline")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--pg-dsn", default=r.DEFAULT_DSN)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {args.executions} executions per round; loadavg {c.loadavg_text()}")
    if args.backend in ("sqlite", "both"):
        await measure("sqlite", r.sqlite_store, args)
    if args.backend in ("postgres", "both"):
        try:
            r.pg_admin(args.pg_dsn, "SELECT 1")
        except Exception as exc:
            print(f"postgres skipped: {type(exc).__name__}: {' '.join(str(exc).split())}")
        else:
            await measure("postgres", r.postgres_stores(args.pg_dsn), args)
    print(f"loadavg after: {c.loadavg_text()}")


if __name__ == "__main__":
    asyncio.run(main())
