"""A PostgreSQL outage, for real: a private cluster is stopped under a running server and started again.

The server keeps answering synchronous requests, holds their executions in its recorder (health "degraded")
and writes every one of them once the database is back; an admin component write during the outage is
refused with 503 and changes nothing. The cluster is this module's own (initdb in a temp dir, a free port),
so stopping it cannot disturb the shared test database.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.settings import Database
from tests.conftest import ADMIN, SECRET, MakeServer, Server, free_port, hello, service_unavailable, until

PG_BIN = Path(os.environ.get("WORKFLOW_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"  # the OS user that owns and runs the cluster (PostgreSQL refuses to run as root)

CONFIG = """\
pipelines:
  echo:
    trigger: {type: http, config: {path: /echo, method: POST}}
    steps:
      - {name: mark, type: step.set, config: {values: {seen: true}}}
      - name: respond
        type: step.json_response
        config: {status: 200, body: {id: "{{ .meta.execution_id }}", n: "{{ .n }}"}}
  hello:
    trigger: {type: http, config: {path: /hello, method: GET}}
    steps:
      - {name: hello, type: step.hello}
"""


class PrivatePostgres:
    """A throw-away cluster in `folder`, listening on 127.0.0.1:`port` with trust auth."""

    def __init__(self, folder: Path, port: int, as_user: list[str]) -> None:
        self.folder, self.port, self.as_user = folder, port, as_user
        self.running = False

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), *args]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            log = self.folder / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}: {done.stderr}{done.stdout}\n{tail}")
        return done

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        # -l: the postmaster must not inherit our pipes, or subprocess.run would wait for it to exit.
        self._pg_ctl("-o", options, "-l", str(self.folder / "postgres.log"), "-w", "-t", "30", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "-t", "30", "stop", check=mode != "immediate")
        self.running = False

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)  # the server under test runs on this loop meanwhile

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


def _run_as() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as PG_USER (skips when impossible)."""
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / name).is_file()]
    if missing:
        service_unavailable(f"PostgreSQL binaries {', '.join(missing)} not found in {PG_BIN}; set WORKFLOW_TEST_PG_BIN")
    try:
        user = pwd.getpwnam(PG_USER)
    except KeyError:
        service_unavailable(f"no OS user {PG_USER!r} to run a private PostgreSQL cluster")
    if os.geteuid() == user.pw_uid:
        return []
    if os.geteuid() != 0:
        service_unavailable(
            f"a private PostgreSQL cluster must run as {PG_USER!r}: run the tests as root or as {PG_USER}"
        )
    runuser = shutil.which("runuser")
    if runuser is None:
        service_unavailable("runuser (util-linux) is missing: cannot start PostgreSQL as its own user")
    return [runuser, "-u", PG_USER, "--"]


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """initdb once per module, start; always stopped (immediate) and removed at the end."""
    as_user = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="wf_pg_"))  # short: the socket path must fit in 107 bytes
    user = pwd.getpwnam(PG_USER)
    os.chown(folder, user.pw_uid, user.pw_gid)
    pg = PrivatePostgres(folder, free_port(), as_user)
    try:
        done = subprocess.run(
            [
                *as_user,
                str(PG_BIN / "initdb"),
                "-D",
                str(folder / "data"),
                "-A",
                "trust",
                "-U",
                PG_USER,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr}{done.stdout}")
        pg.start()
        yield pg
    finally:
        if (folder / "data" / "postmaster.pid").exists():
            pg.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def pg(private_postgres: PrivatePostgres) -> PrivatePostgres:
    """The module's cluster, running (a failed test may have left it stopped)."""
    if not private_postgres.running:
        await private_postgres.astart()
    return private_postgres


async def start_server(make_server: MakeServer, pg: PrivatePostgres) -> Server:
    database = Database(host="127.0.0.1", port=pg.port, name="postgres", user=PG_USER, pool_size=3)
    server = await make_server(CONFIG, db=database, jwt_secret=SECRET, reconcile_interval=60.0)
    await until(lambda: _status(server, "/readyz", 200), timeout=10)
    return server


async def _status(server: Server, path: str, status: int) -> bool:
    return (await server.client.get(path)).status == status


async def health(server: Server) -> dict[str, Any]:
    response = await server.client.get("/healthz")
    assert response.status == 200  # degraded is still 200: the server serves
    return await response.json()


async def echo(server: Server, n: int) -> str:
    response = await server.client.post("/echo", json={"n": n})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["n"] == n
    return body["id"]


async def test_requests_are_served_and_their_executions_recorded_after_an_outage(
    make_server: MakeServer, pg: PrivatePostgres
) -> None:
    server = await start_server(make_server, pg)
    engine = server.engine
    recorder = engine.recorder
    assert recorder is not None
    # The default backoff grows to 30s; capped here so the retry after the restart comes within a second.
    recorder.max_backoff = 1.0

    before = [await echo(server, n) for n in range(3)]
    await until(lambda: recorder.pending == 0 and recorder.flushed >= 3)
    assert (await health(server))["status"] == "ok"

    await pg.astop()
    during = [await echo(server, n) for n in range(3, 13)]
    await until(lambda: not recorder.healthy, timeout=5)
    during += [await echo(server, n) for n in range(13, 23)]  # still served once the store is known down

    body = await health(server)
    store = body["checks"]["store"]
    assert body["status"] == "degraded" and store["status"] == "degraded", body
    assert store["kind"] == "postgres" and store["pending"] == recorder.pending >= 10 and store["error"]
    assert recorder.pending > 0 and recorder.dropped == 0
    assert len(set(during)) == 20

    await pg.astart()

    async def all_recorded() -> bool:
        return recorder.pending == 0 and all([await server.store.get_execution(i) is not None for i in during])

    await until(all_recorded, timeout=8)
    await until(lambda: _healthy(server), timeout=3)
    rows = {i: await server.store.get_execution(i) for i in before + during}
    assert all(row is not None and row.pipeline == "echo" and row.status == "success" for row in rows.values())
    assert recorder.dropped == 0 and recorder.rejected == 0


async def _healthy(server: Server) -> bool:
    body = await health(server)
    return body["status"] == "ok" and body["checks"]["store"]["status"] == "ok"


async def test_an_admin_component_write_during_the_outage_is_refused_and_changes_nothing(
    make_server: MakeServer, pg: PrivatePostgres, tmp_path: Path
) -> None:
    server = await start_server(make_server, pg)
    api = "/api/dynamic/components"
    response = await server.admin.post(api, headers=ADMIN, json={"id": "hello", "source": hello(1)})
    assert response.status == 201, await response.text()
    assert (await (await server.client.get("/hello")).json())["version"] == 1
    folder = tmp_path / "components"
    files_before = sorted(p.name for p in folder.iterdir())

    await pg.astop()
    response = await server.admin.put(f"{api}/hello", headers=ADMIN, json={"source": hello(2)})
    assert response.status == 503
    assert response.content_type == "application/json"
    body = await response.json()
    assert "store is unavailable" in body["error"] and "nothing was changed" in body["error"], body
    # Nothing changed: the old version serves, its file is intact, no temp file is left behind.
    assert (await (await server.client.get("/hello")).json())["version"] == 1
    assert (folder / "hello.py").read_text() == hello(1)
    assert sorted(p.name for p in folder.iterdir()) == files_before
    response = await server.admin.get(f"{api}/hello", headers=ADMIN)
    assert response.status == 200 and (await response.json())["source"] == hello(1)

    await pg.astart()
    row = await _eventually(lambda: server.store.get_component("hello"))
    assert row.version == 1 and row.source == hello(1)  # the refused write never reached the store
    # Writes work again once the database is back.
    response = await server.admin.put(f"{api}/hello", headers=ADMIN, json={"source": hello(2)})
    assert response.status == 200, await response.text()
    assert (await (await server.client.get("/hello")).json())["version"] == 2


async def _eventually(call: Any, timeout: float = 5.0) -> Any:
    """The result of `call()` once it stops raising (the pool reconnects after the restart)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await call()
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
