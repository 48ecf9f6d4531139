"""Replication: how long a component update made through one replica takes to serve on all three.

    .venv/bin/python tests/bench/bench_replicas.py [--updates 50] [--target 1.0] [--db-host 127.0.0.1:5432]

Starts three `workflow-server` processes (replicas a, b, c) on 127.0.0.1 that share PostgreSQL (a fresh
schema `bench_replicas_<random>`, created here with psycopg2 and dropped at the end) and Redis, each with
its own components and data folders, WORKFLOW_RECONCILE_INTERVAL=60s (so the periodic reconcile plays no
part: changes travel by the store and Redis) and log level warning. The component `bench_version`
registers `step.bench_version`, which returns {"version": VERSION}; the pipeline `GET /version` runs it.

Measured: --updates updates, each a `PUT /api/dynamic/components/bench_version` with the next VERSION
through the admin API of replicas a, b, c in turn (JWT HS256, role admin); after each, one keep-alive
aiohttp connection per replica polls `GET /version` in a tight loop until it serves the new VERSION. The
figure is PUT start -> the last replica serving it. Target: p99 <= --target seconds (1 s), no timeouts.

Exit code: 0 when everything ran, whether or not the target was met; 1 when something failed to run
(`BENCHMARK FAILED: ...` on stderr, temp dir kept); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shlex
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import _common as c
import aiohttp
import jwt
import psycopg2
import redis

COMPONENT_ID = "bench_version"
STEP = "step.bench_version"
PATH = "/version"
REPLICAS = ("a", "b", "c")

COMPONENT = '''\
"""Benchmark component, version {version} (written by tests/bench/bench_replicas.py)."""

from server import hookimpl

VERSION = {version}


async def version_step(ctx):
    """Answer with this source's version number."""
    return {{"version": VERSION}}


@hookimpl
def register_steps(register):
    register("{step}", version_step, description="bench: returns VERSION")
'''

CONFIG = f"""\
# written by tests/bench/bench_replicas.py
name: replicas-bench
pipelines:
  version:
    trigger:
      type: http
      config: {{path: {PATH}, method: GET}}
    steps:
      - name: version
        type: {STEP}
"""


def component_text(version: int) -> str:
    return COMPONENT.format(version=version, step=STEP)


@dataclass
class Replica:
    """One server process and the keep-alive session that polls it."""

    name: str
    port: int
    admin: int
    server: c.ServerProcess
    session: aiohttp.ClientSession | None = None
    latencies: list[float] = field(default_factory=list)
    polls: int = 0
    errors: int = 0

    @property
    def url(self) -> str:
        return f"http://{c.HOST}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{c.HOST}:{self.admin}"

    async def version(self) -> int | None:
        """The VERSION this replica serves now (None: not 200, or an error)."""
        assert self.session is not None
        self.polls += 1
        try:
            async with self.session.get(self.url + PATH) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    return None
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.errors += 1
            return None
        try:
            value = json.loads(raw).get("version")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, int) else None

    async def wait_for(self, version: int, deadline: float) -> float | None:
        """Poll in a tight loop until `version` serves; perf_counter then, or None at the deadline."""
        while time.perf_counter() < deadline:
            if await self.version() == version:
                return time.perf_counter()
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Component update through one replica -> served by all three.")
    p.add_argument("--updates", type=int, default=50, help="updates measured (default 50)")
    p.add_argument("--warmup", type=int, default=3, help="updates made (and not measured) first (default 3)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds an update may take to reach every replica")
    p.add_argument("--gap", type=float, default=0.05, help="seconds between updates (default 0.05)")
    p.add_argument("--target", type=float, default=1.0, help="target p99 in seconds (default 1.0)")
    p.add_argument("--db-host", default="127.0.0.1:5432", help="PostgreSQL HOST:PORT (default 127.0.0.1:5432)")
    p.add_argument("--db-name", default="test", help="database (default test)")
    p.add_argument("--db-user", default="postgres", help="user (default postgres; trust auth, no password)")
    p.add_argument("--redis", default="127.0.0.1:6379", help="Redis HOST:PORT (default 127.0.0.1:6379)")
    p.add_argument("--reconcile-interval", default="60s", help="WORKFLOW_RECONCILE_INTERVAL (default 60s)")
    p.add_argument("--log-level", default="warning", help="WORKFLOW_LOG_LEVEL of the servers (default warning)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (configs, folders, logs)")
    ns = p.parse_args(argv)
    if ns.updates < 1 or ns.warmup < 0 or ns.timeout <= 0 or ns.gap < 0 or ns.target <= 0:
        p.error("--updates must be >= 1, --warmup >= 0, --timeout and --target > 0, --gap >= 0")
    return ns


def dsn(ns: argparse.Namespace) -> str:
    host, _, port = ns.db_host.rpartition(":")
    return f"host={host} port={port} dbname={ns.db_name} user={ns.db_user} connect_timeout=5"


def pg_admin(ns: argparse.Namespace, statement: str) -> None:
    try:
        with closing(psycopg2.connect(dsn(ns))) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET lock_timeout = '10s'")
                cur.execute(statement)
    except psycopg2.Error as exc:
        raise c.BenchError(f"PostgreSQL at {dsn(ns)!r}: {' '.join(str(exc).split())}") from None


def check_redis(addr: str) -> None:
    try:
        with redis.Redis.from_url(f"redis://{addr}", socket_connect_timeout=3, socket_timeout=3) as client:
            client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise c.BenchError(f"Redis unreachable at {addr!r}: {exc}") from None


def make_replicas(ns: argparse.Namespace, tmp: Path, schema: str, secret: str) -> list[Replica]:
    config = tmp / "bench.yaml"
    config.write_text(CONFIG)
    replicas = []
    used: set[int] = set()
    for name in REPLICAS:
        port = admin = 0
        while port in used or admin in used or port == admin:
            port, admin = c.free_port(), c.free_port()
        used |= {port, admin}
        state = tmp / name
        (state / "components").mkdir(parents=True)
        env = {k: v for k, v in c.child_env().items() if not k.startswith(("WORKFLOW_", "JWT_"))}
        env.update(
            {
                "WORKFLOW_LOG_LEVEL": ns.log_level,
                "WORKFLOW_LOG_FORMAT": "json",
                "WORKFLOW_COMPONENTS_DIR": str(state / "components"),
                "WORKFLOW_DATA_DIR": str(state / "data"),
                "WORKFLOW_SHUTDOWN_TIMEOUT": "5s",
                "WORKFLOW_DB_HOST": ns.db_host,
                "WORKFLOW_DB_NAME": ns.db_name,
                "WORKFLOW_DB_USER": ns.db_user,
                "WORKFLOW_DB_SCHEMA": schema,
                "WORKFLOW_REDIS_ADDR": ns.redis,
                "WORKFLOW_REPLICA_ID": name,
                "WORKFLOW_RECONCILE_INTERVAL": ns.reconcile_interval,
                "JWT_SECRET": secret,
            }
        )
        cmd = [
            c.venv_script("workflow-server"),
            "-config",
            str(config),
            "--addr",
            f"{c.HOST}:{port}",
            "--admin-addr",
            f"{c.HOST}:{admin}",
        ]
        server = c.ServerProcess(name, cmd, env, tmp / f"{name}.log", cwd=c.ROOT)
        replicas.append(Replica(name, port, admin, server))
    return replicas


async def wait_connected(replica: Replica, timeout: float = 30.0) -> None:
    """Ready (reconciled) and subscribed to Redis: /healthz shows replication.redis == connected."""
    assert replica.session is not None
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            async with replica.session.get(replica.url + "/healthz") as resp:
                last = await resp.json()
            if last["checks"]["replication"].get("redis") == "connected" and last["checks"]["replication"]["ready"]:
                return
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError):
            pass
        await asyncio.sleep(0.05)
    raise c.BenchError(
        f"replica {replica.name} not subscribed to Redis after {timeout:.0f}s: {last}\n{replica.server.log_tail()}"
    )


async def write(
    admin: aiohttp.ClientSession, replica: Replica, headers: dict[str, str], version: int, create: bool
) -> None:
    body = {"source": component_text(version)}
    if create:
        request = admin.post(
            replica.admin_url + "/api/dynamic/components", json={"id": COMPONENT_ID, **body}, headers=headers
        )
    else:
        request = admin.put(f"{replica.admin_url}/api/dynamic/components/{COMPONENT_ID}", json=body, headers=headers)
    async with request as resp:
        text = await resp.text()
        if resp.status != (201 if create else 200):
            raise c.BenchError(
                f"{'POST' if create else 'PUT'} through {replica.name} answered {resp.status}: {text[:500]}"
            )


async def update(
    admin: aiohttp.ClientSession,
    via: Replica,
    replicas: list[Replica],
    headers: dict[str, str],
    version: int,
    timeout: float,
    create: bool = False,
) -> tuple[float, float, list[float | None]]:
    """One update: (PUT seconds, PUT start -> last replica serving or inf, per-replica seconds or None)."""
    t0 = time.perf_counter()
    await write(admin, via, headers, version, create)
    t_put = time.perf_counter() - t0
    seen = await asyncio.gather(*(r.wait_for(version, t0 + timeout) for r in replicas))
    per = [None if s is None else s - t0 for s in seen]
    last = float("inf") if None in per else max(per)  # type: ignore[type-var]
    return t_put, last, per


def ms(seconds: float) -> str:
    return "timeout" if seconds == float("inf") else f"{seconds * 1000:.1f} ms"


def summary(values: list[float]) -> str:
    return (
        f"p50 {ms(c.percentile(values, 50))}  p90 {ms(c.percentile(values, 90))}  "
        f"p99 {ms(c.percentile(values, 99))}  max {ms(max(values))}  min {ms(min(values))}"
    )


async def run(ns: argparse.Namespace, tmp: Path) -> int:
    print("== machine")
    for line in c.machine_lines():
        print("  " + line)
    print("== command")
    print("  " + shlex.join([sys.executable, *sys.argv]))
    check_redis(ns.redis)
    schema = f"bench_replicas_{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(32)
    headers = {
        "Authorization": "Bearer "
        + jwt.encode({"sub": "bench", "role": "admin", "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
    }
    pg_admin(ns, f"CREATE SCHEMA {schema}")
    replicas: list[Replica] = []
    try:
        replicas = make_replicas(ns, tmp, schema, secret)
        print(
            f"  PostgreSQL {ns.db_host}/{ns.db_name} user {ns.db_user}, schema {schema} (dropped at the end); "
            f"Redis {ns.redis}; no CPU pinning (3 servers, PostgreSQL, Redis and this script share the machine)"
        )
        for r in replicas:
            env = {k: v for k, v in r.server.env.items() if k.startswith(("WORKFLOW_", "JWT_")) and k != "JWT_SECRET"}
            print(f"  replica {r.name}: {shlex.join(r.server.cmd)}")
            print(f"    env: {' '.join(f'{k}={v}' for k, v in sorted(env.items()))} JWT_SECRET=<random>")
        print("== pipeline config")
        print("  " + CONFIG.rstrip().replace("\n", "\n  "))
        print("== component (VERSION = N)")
        print("  " + component_text(1).rstrip().replace("\n", "\n  "))
        sys.stdout.flush()

        for r in replicas:
            r.server.start()
        for r in replicas:
            r.server.wait_ready(r.url + "/readyz", timeout=60)
        for r in replicas:
            # One connection per replica, kept alive: the polls measure the server, not connection set-up.
            r.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=5)
            )
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=3), timeout=aiohttp.ClientTimeout(total=30)
        ) as admin:
            for r in replicas:
                await wait_connected(r)
            print(f"== warm-up: create through a, then {ns.warmup} updates (not measured)")
            version = 1
            _, last, _ = await update(admin, replicas[0], replicas, headers, version, ns.timeout, create=True)
            if last == float("inf"):
                raise c.BenchError(f"version 1 did not reach every replica within {ns.timeout}s")
            for _ in range(ns.warmup):
                version += 1
                await update(admin, replicas[version % 3], replicas, headers, version, ns.timeout)
            for r in replicas:
                r.polls = r.errors = 0
            print(f"== measuring: {ns.updates} updates, PUT through a, b, c in turn, {ns.gap}s apart")
            sys.stdout.flush()
            figures: list[float] = []
            puts: list[float] = []
            by_via: dict[str, list[float]] = {r.name: [] for r in replicas}
            load_before = c.loadavg_text()
            started = time.monotonic()
            for i in range(ns.updates):
                version += 1
                via = replicas[i % 3]
                t_put, last, per = await update(admin, via, replicas, headers, version, ns.timeout)
                puts.append(t_put)
                figures.append(last)
                by_via[via.name].append(last)
                for r, seconds in zip(replicas, per, strict=True):
                    r.latencies.append(float("inf") if seconds is None else seconds)
                if (i + 1) % 10 == 0 or i + 1 == ns.updates:
                    print(f"  {i + 1}/{ns.updates}: last {ms(last)} (via {via.name}, PUT {ms(t_put)})")
                    sys.stdout.flush()
                if ns.gap:
                    await asyncio.sleep(ns.gap)
            elapsed = time.monotonic() - started
            health = {}
            for r in replicas:
                async with r.session.get(r.url + "/healthz") as resp:  # type: ignore[union-attr]
                    health[r.name] = (await resp.json())["checks"]["replication"]
    finally:
        for r in replicas:
            if r.session is not None:
                await r.session.close()
        for r in replicas:
            r.server.stop()
        pg_admin(ns, f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    timeouts = sum(1 for f in figures if f == float("inf"))
    p99 = c.percentile(figures, 99)
    print("\n== results: PUT start -> last replica serving the new version")
    print(f"  updates: {len(figures)} in {elapsed:.1f}s, timeouts (> {ns.timeout}s): {timeouts}")
    print(f"  all replicas:  {summary(figures)}  mean {ms(sum(figures) / len(figures))}")
    print(f"  PUT alone:     {summary(puts)}")
    for r in replicas:
        print(
            f"  replica {r.name} serving: p50 {ms(c.percentile(r.latencies, 50))}  "
            f"p99 {ms(c.percentile(r.latencies, 99))}  (polls {r.polls}, poll errors {r.errors})"
        )
    for name, values in by_via.items():
        print(f"  PUT via {name}:     p50 {ms(c.percentile(values, 50))}  max {ms(max(values))}  ({len(values)})")
    for name, check in health.items():
        print(f"  replica {name} replication check: {json.dumps(check, sort_keys=True)}")
    print(
        f"  loadavg: {load_before} before measuring, {c.loadavg_text()} after "
        "(other work on this machine perturbs every figure)"
    )
    ok = timeouts == 0 and p99 <= ns.target
    print(
        f"{'TARGET MET' if ok else 'TARGET MISSED'}: p99 {ms(p99)} <= {ns.target * 1000:.0f} ms"
        f" and no timeouts ({timeouts})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    return c.run_in_temp("bench-replicas-", ns.keep_temp, lambda tmp: asyncio.run(run(ns, tmp)))


if __name__ == "__main__":
    sys.exit(main())
