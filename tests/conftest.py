"""Shared fixtures and helpers: servers built from real config text, served on loopback by aiohttp_client.

Test modules import the helpers (functions and constants) from here and request the fixtures by name; no test
module imports from another one.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import os
import re
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import psycopg2
import pytest
import redis
from aiohttp.test_utils import TestClient

from server.app import build_engine, create_apps
from server.engine.runner import Engine
from server.keys import REPLICATOR, STORE
from server.queue.redis import deployment_prefix
from server.settings import Database, Settings
from server.store import Store
from tests.chat_fake import FakeApi, fake_app
from tests.pipeline_plugin import CALLS, build_test_engine

ROOT = Path(__file__).resolve().parent.parent
# .ci/run sets these (and WORKFLOW_TEST_STRICT, which turns a missing service into a failure instead of a skip).
PG_DSN = os.environ.get("WORKFLOW_TEST_DATABASE", "host=127.0.0.1 port=5432 user=postgres dbname=test")
REDIS_ADDR = os.environ.get("WORKFLOW_TEST_REDIS", "127.0.0.1:6379")


@dataclass
class Server:
    """A running main listener (and admin listener) around one engine."""

    client: TestClient
    admin: TestClient
    engine: Engine

    @property
    def store(self) -> Store:
        """The server's store (open while the server runs)."""
        return self.client.app[STORE]

    async def metrics(self) -> str:
        """The Prometheus text of the main listener."""
        response = await self.client.get("/metrics")
        return await response.text()


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a test server: folders under tmp_path, short timeouts."""
    return Settings(
        components_dir=tmp_path / "components", data_dir=tmp_path / "data", shutdown_timeout=5.0, step_timeout=5.0
    )


@pytest.fixture
async def make_server(aiohttp_client, settings: Settings, tmp_path: Path) -> MakeServer:
    """Start a server from YAML text (dedented) and return its clients and engine."""

    async def make(config_text: str, **overrides: Any) -> Server:
        path = tmp_path / "config.yaml"
        path.write_text(textwrap.dedent(config_text))
        final = replace(settings, config_path=path, **overrides)
        engine = build_engine(final, entry_points=False)
        apps = create_apps(final, engine=engine)
        client = await aiohttp_client(apps.main)
        admin = await aiohttp_client(apps.admin)
        return Server(client, admin, engine)

    return make


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            try:
                what = inspect.getsource(predicate).strip()
            except (OSError, TypeError):
                what = repr(predicate)
            pytest.fail(f"condition not met within {timeout}s: {what}")
        await asyncio.sleep(0.01)


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \S+)?")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# The sample names a family of each type writes besides its own name (text format 0.0.4 and OpenMetrics).
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample `name{labels}` in Prometheus text.

    - `name` must be declared: it has a `# TYPE` line, or is the `_bucket`/`_count`/`_sum` sample of a declared
      histogram (the `_total` one of a counter). Anything else (a renamed or misspelt metric) fails the test.
    - Every label given must be one the samples of `name` carry, and the labels must pick at most one sample.
    - A declared family with no sample for these labels reads 0.0: a counter or gauge child that nothing has
      touched yet is zero, as Prometheus reads it. Tests that know a non-zero value assert it exactly, so a child
      under wrong labels still fails them.
    """
    families: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            families[family] = kind
        elif line and not line.startswith("#"):
            match = _SAMPLE.fullmatch(line)
            assert match, f"not a Prometheus sample line: {line!r}"
            sample, label_text, value = match.groups()
            samples.append((sample, dict(_LABEL.findall(label_text or "")), float(value)))
    declared = name in families or any(
        name.endswith(suffix) and suffix in _SUFFIXES.get(families.get(name.removesuffix(suffix), ""), ())
        for suffix in ("_total", "_bucket", "_count", "_sum")
    )
    if not declared:
        close = difflib.get_close_matches(name, families, n=3, cutoff=0.6)
        raise AssertionError(
            f"metric {name!r} is not in the metrics text (no `# TYPE` line declares it)"
            + (f"; did you mean {' or '.join(map(repr, close))}?" if close else "")
        )
    own = [(sample_labels, value) for sample, sample_labels, value in samples if sample == name]
    known = {label for sample_labels, _ in own for label in sample_labels}
    unknown = sorted(set(labels) - known)
    if own and unknown:
        raise AssertionError(f"metric {name!r} has no label(s) {unknown}; its labels are {sorted(known)}")
    matches = [value for sample_labels, value in own if all(sample_labels.get(k) == v for k, v in labels.items())]
    if len(matches) > 1:
        raise AssertionError(f"{name}{labels} matches {len(matches)} samples; give the labels that pick one")
    return matches[0] if matches else 0.0


def server_command(config: str | Path, addr: str, admin_addr: str) -> list[str]:
    """The command line of a real `workflow-server` process (`python -m server`) on the given addresses."""
    return [sys.executable, "-m", "server", "-config", str(config), "--addr", addr, "--admin-addr", admin_addr]


async def start_server_process(
    config: Path, tmp_path: Path, *extra: str, **env_vars: str
) -> tuple[asyncio.subprocess.Process, int, int]:
    """A real server process on free loopback ports (main, admin), data and components under `tmp_path`, once
    /readyz answers 200; JSON logs on its piped stderr. Fails the test with its stderr if it never gets ready."""
    port, admin = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")},
        "WORKFLOW_LOG_FORMAT": "json",
        "WORKFLOW_DATA_DIR": str(tmp_path / "data"),
        "WORKFLOW_COMPONENTS_DIR": str(tmp_path / "components"),
        **env_vars,
    }
    proc = await asyncio.create_subprocess_exec(
        *server_command(config, f"127.0.0.1:{port}", f"127.0.0.1:{admin}"),
        *extra,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return proc, port, admin
            except aiohttp.ClientConnectionError:
                pass
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
    if proc.returncode is None:
        proc.kill()
    pytest.fail(f"server did not become ready:\n{(await proc.communicate())[1].decode()}")


def service_unavailable(reason: str) -> None:
    """Skip, or fail under WORKFLOW_TEST_STRICT (CI), because a service a test needs is missing."""
    if os.environ.get("WORKFLOW_TEST_STRICT"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The test PostgreSQL server's DSN (WORKFLOW_TEST_DATABASE)."""
    try:
        psycopg2.connect(PG_DSN, connect_timeout=3).close()
    except psycopg2.Error as exc:
        service_unavailable(
            f"PostgreSQL unreachable at {PG_DSN!r} ({' '.join(str(exc).split())}); set WORKFLOW_TEST_DATABASE"
        )
    return PG_DSN


def pg_admin(dsn: str, statement: str) -> None:
    """Run one statement outside a transaction."""
    with closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")  # a leaked session must fail the test, not hang it
            cur.execute(statement)


@pytest.fixture
def pg_schema_dsn(postgres_dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh schema `wf_test_<random>`, dropped afterwards."""
    schema = f"wf_test_{secrets.token_hex(6)}"
    pg_admin(postgres_dsn, f"CREATE SCHEMA {schema}")
    yield f"{postgres_dsn} options='-c search_path={schema}'"
    pg_admin(postgres_dsn, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def redis_addr() -> str:
    """The test Redis server's host:port (WORKFLOW_TEST_REDIS)."""
    try:
        with redis.Redis.from_url(f"redis://{REDIS_ADDR}", socket_connect_timeout=3, socket_timeout=3) as client:
            client.ping()
    except (redis.RedisError, ValueError) as exc:
        service_unavailable(f"Redis unreachable at {REDIS_ADDR!r} ({exc}); set WORKFLOW_TEST_REDIS")
    return REDIS_ADDR


async def equals(value: Awaitable[Any], expected: Any) -> bool:
    """Whether the awaited `value` is `expected`: for `until(lambda: equals(replica.version(), 2))`."""
    return await value == expected


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m server ARGS` from the project root, without WORKFLOW_* settings from outside."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


# --------------------------------------------------------------------------- components and the admin API

SECRET = "s" * 40

# HUB (tests/hub.py) is shared with the `hello(wait=True)` component sources: a gate a step can wait on. It
# lives in a module that imports nothing, so a component's candidate process imports it at once.


def hello(version: int, *, step: str = "step.hello", wait: bool = False) -> str:
    """A component whose step answers its version (after the test's gate `HUB["gate"]` opens, when `wait`).

    Without `wait` it imports nothing from the tests, so a server process of its own can load it too.
    """
    gate = "    await HUB['gate'].wait()\n" if wait else ""
    return (
        "from server import hookimpl\n" + ("from tests.hub import HUB\n" if wait else "") + f"VERSION = {version}\n\n\n"
        "async def hello(ctx):\n"
        f"{gate}"
        "    return {'version': VERSION}\n\n\n"
        "@hookimpl\n"
        "def register_steps(register):\n"
        f"    register({step!r}, hello)\n"
    )


def token(sub: str = "ada", secret: str = SECRET, **claims: Any) -> dict[str, str]:
    """Authorization headers with an HS256 token (admin role unless `claims` say otherwise)."""
    body = {"sub": sub, "role": "admin", "exp": int(time.time()) + 3600, **claims}
    return {"Authorization": "Bearer " + jwt.encode(body, secret, algorithm="HS256")}


# Made once at import: valid for an hour, so a long run (a busy CI machine) never sees it expire.
ADMIN = token()


@pytest.fixture
def components(tmp_path: Path) -> Path:
    """The components folder of the `settings` fixture, created empty."""
    directory = tmp_path / "components"
    directory.mkdir()
    return directory


# --------------------------------------------------------------------------- the step types of tests/pipeline_plugin.py


@pytest.fixture
async def serve(aiohttp_client, settings: Settings) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start a server from YAML text with the test step types available; `strict=False` allows unknown types."""
    CALLS.clear()

    async def make(text: str, *, strict: bool = True, **overrides: Any) -> Server:
        final = replace(settings, **overrides)
        engine = build_test_engine(final, text, strict=strict)
        apps = create_apps(final, engine=engine)
        return Server(await aiohttp_client(apps.main), await aiohttp_client(apps.admin), engine)

    yield make
    CALLS.clear()


@pytest.fixture
async def fake_api(aiohttp_server) -> FakeApi:
    """A local fake of the chat platforms' APIs (tests/chat_fake.py), served on loopback."""
    api = FakeApi()
    server = await aiohttp_server(fake_app(api))
    api.url = str(server.make_url("")).rstrip("/")
    return api


# --------------------------------------------------------------------------- replicas sharing PostgreSQL and Redis

REPLICA_CONFIG = textwrap.dedent("""
    pipelines:
      hello:
        trigger: {type: http, config: {path: /hello, method: GET}}
        steps:
          - {name: hello, type: step.hello}
      ping:
        trigger: {type: http, config: {path: /ping, method: GET}}
        steps:
          - {name: answer, type: step.json_response, config: {body: {pong: true}}}
""")


class Replica:
    """One server of a replicated deployment, served on loopback."""

    def __init__(self, name: str, client: TestClient, admin: TestClient, folder: Path) -> None:
        self.name, self.client, self.admin, self.folder = name, client, admin, folder

    async def version(self) -> int | None:
        """The hello component version this replica serves (None: 503 or another error)."""
        response = await self.client.get("/hello")
        return (await response.json())["version"] if response.status == 200 else None

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await self.admin.request(method, "/api/dynamic/components" + path, headers=ADMIN, json=body)
        return response.status, (await response.json() if response.status != 204 else None)

    async def health(self) -> dict[str, Any]:
        return await (await self.client.get("/healthz")).json()


StartReplica = Callable[..., Awaitable[Replica]]


@pytest.fixture
def database(pg_schema_dsn: str) -> Database:
    """The test PostgreSQL server, in a fresh schema."""
    fields = dict(part.split("=", 1) for part in pg_schema_dsn.split(" options=")[0].split())
    schema = pg_schema_dsn.split("search_path=")[1].rstrip("'")
    return Database(
        host=fields["host"],
        port=int(fields.get("port", 5432)),
        name=fields["dbname"],
        user=fields["user"],
        schema=schema,
        pool_size=3,
    )


@pytest.fixture
def replica_queue_keys(database: Database, redis_addr: str) -> Iterator[None]:
    """After the test: delete the Redis keys of the replicas' shared queue (named after the test's schema)."""
    yield
    prefix = deployment_prefix(Settings(db=database).deployment_name)
    with redis.Redis.from_url(f"redis://{redis_addr}") as client:
        keys = list(client.scan_iter(match=prefix.replace("{", "\\{").replace("}", "\\}") + "*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def start_replica(
    database: Database, redis_addr: str, replica_queue_keys: None, aiohttp_client, tmp_path: Path
) -> StartReplica:
    # `database` and the queue's keys first: cleaned up last, after every replica has closed its connections.
    """Start replica NAME with its own folders, sharing the database and Redis; again after stop: a restart."""
    config = tmp_path / "config.yaml"
    config.write_text(REPLICA_CONFIG)

    async def start(name: str, *, redis: str | None = redis_addr, **overrides: Any) -> Replica:
        folder = tmp_path / name / "components"
        folder.mkdir(parents=True, exist_ok=True)
        settings = Settings(
            config_path=config,
            components_dir=folder,
            data_dir=tmp_path / name / "data",
            db=database,
            redis_addr=f"redis://{redis}" if redis else None,
            replica_id=name,
            jwt_secret=SECRET,
            debounce=0.01,
            shutdown_timeout=5.0,
            step_timeout=5.0,
            reconcile_interval=60.0,
        )
        settings = replace(settings, **overrides)
        apps = create_apps(settings, engine=build_engine(settings, entry_points=False))
        client = await aiohttp_client(apps.main)
        admin = await aiohttp_client(apps.admin)
        return Replica(name, client, admin, folder)

    return start


async def ready(replica: Replica) -> bool:
    return (await replica.client.get("/readyz")).status == 200


async def listening(replica: Replica) -> bool:
    """Ready, and subscribed to the other replicas' changes."""
    return await ready(replica) and replica.client.app[REPLICATOR].bus.connected
