"""`step.db_query` and `step.db_exec` end to end over HTTP, on SQLite files and a real PostgreSQL."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from server.errors import ConfigError
from server.settings import Database
from tests.conftest import ROOT, MakeServer, pg_admin

ORDERS_TABLE = (
    "CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, total NUMERIC, qty INTEGER, note TEXT)"
)


@dataclass
class Backend:
    """Where the named connection `main` points, and how the test reaches the same database directly."""

    driver: str
    target: str  # a sqlite path or a libpq DSN

    def run(self, statement: str) -> None:
        """Run one statement on the database, outside the server."""
        if self.driver == "sqlite":
            with closing(sqlite3.connect(self.target)) as db:
                db.execute(statement)
                db.commit()
        else:
            pg_admin(self.target, statement)

    def connections(self, name: str = "main") -> str:
        """The `connections:` section declaring `name` (its location comes through ${VAR})."""
        value = 'path: "${DB_TARGET}"' if self.driver == "sqlite" else 'dsn: "${DB_TARGET}"'
        return f"connections:\n  {name}:\n    driver: {self.driver}\n    {value}\n"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """The named connection on a SQLite file or in a fresh PostgreSQL schema, with an `orders` table."""
    if request.param == "sqlite":
        chosen = Backend("sqlite", str(tmp_path / "named" / "orders.db"))
        (tmp_path / "named").mkdir()
    else:
        chosen = Backend("postgres", request.getfixturevalue("pg_schema_dsn"))
    monkeypatch.setenv("DB_TARGET", chosen.target)
    chosen.run(ORDERS_TABLE)
    return chosen


@pytest.fixture
def pg_database(postgres_dsn: str) -> Iterator[Database]:
    """A fresh PostgreSQL database for a server's own store (WORKFLOW_DB_* settings), dropped afterwards.

    Request it before `make_server`, so the server stops before its database goes.
    """
    name = f"wf_test_{secrets.token_hex(6)}"
    pg_admin(postgres_dsn, f"CREATE DATABASE {name}")
    params = psycopg2.extensions.parse_dsn(postgres_dsn)
    yield Database(
        host=params.get("host", "127.0.0.1"),
        port=int(params.get("port", 5432)),
        name=name,
        user=params.get("user", "postgres"),
        password=params.get("password", ""),
        pool_size=3,
    )
    pg_admin(postgres_dsn, f"DROP DATABASE {name} WITH (FORCE)")


def pipeline(name: str, steps: str, *, method: str = "POST") -> str:
    """One HTTP-triggered pipeline at /NAME; `steps` is its indented steps block."""
    return f"""  {name}:
    trigger: {{type: http, config: {{path: /{name}, method: {method}}}}}
    steps:
{steps}"""


CRUD = (
    """pipelines:
"""
    + pipeline(
        "add",
        """      - name: insert
        type: step.db_exec
        config:
          connection: main
          query: "INSERT INTO orders (id, customer, total, qty, note) VALUES (:id, :customer, :total, :qty, :note)"
          params: {id: "{{ .id }}", customer: "{{ .customer }}", total: "{{ .total }}", qty: "{{ .qty }}",
                   note: "{{ .note }}"}
""",
    )
    + pipeline(
        "find",
        """      - name: find
        type: step.db_query
        config:
          connection: main
          query: "SELECT id, total, qty FROM orders WHERE customer = ? AND total > ? ORDER BY id"
          params: ["{{ .customer }}", "{{ .min }}"]
          mode: list
""",
    )
    + pipeline(
        "one",
        """      - name: one
        type: step.db_query
        config:
          database: main          # the original engine's key
          query: "SELECT * FROM orders WHERE id = :id"
          params: {id: "{{ .id }}"}
          mode: single
      - name: respond
        type: step.json_response
        config: {body: {row: "{{ .row }}", found: "{{ .found }}"}}
""",
    )
    + pipeline(
        "bump",
        """      - name: bump
        type: step.db_exec
        config:
          connection: main
          query: "UPDATE orders SET qty = qty + 1 WHERE customer = :customer"
          params: {customer: "{{ .customer }}"}
""",
    )
)


async def add(srv: Any, id: str, customer: str, total: float, qty: int, note: str | None = None) -> dict:
    """Insert one order through step.db_exec."""
    response = await srv.client.post(
        "/add", json={"id": id, "customer": customer, "total": total, "qty": qty, "note": note}
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def test_exec_inserts_and_list_and_single_read_back(backend: Backend, make_server: MakeServer) -> None:
    srv = await make_server(backend.connections() + CRUD)
    assert (await add(srv, "o1", "c1", 19.5, 2))["affected_rows"] == 1
    await add(srv, "o2", "c1", 5, 1)
    await add(srv, "o3", "c2", 50, 7, "gift")

    found = await (await srv.client.post("/find", json={"customer": "c1", "min": 1})).json()
    assert found["count"] == 2
    assert found["rows"] == [{"id": "o1", "total": 19.5, "qty": 2}, {"id": "o2", "total": 5, "qty": 1}]

    response = await srv.client.post("/one", json={"id": "o3"})
    assert response.status == 200
    assert await response.json() == {
        "row": {"id": "o3", "customer": "c2", "total": 50, "qty": 7, "note": "gift"},
        "found": True,
    }

    bumped = await (await srv.client.post("/bump", json={"customer": "c1"})).json()
    assert bumped["affected_rows"] == 2


async def test_single_with_no_row_is_null_not_an_error(backend: Backend, make_server: MakeServer) -> None:
    srv = await make_server(backend.connections() + CRUD)
    response = await srv.client.post("/one", json={"id": "missing"})
    assert response.status == 200
    assert await response.json() == {"row": None, "found": False}
    empty = await (await srv.client.post("/find", json={"customer": "nobody", "min": 0})).json()
    assert (empty["rows"], empty["count"]) == ([], 0)


TYPES = """pipelines:
""" + pipeline(
    "types",
    """      - name: echo
        type: step.db_query
        config:
          connection: main
          # literal text with % and placeholder look-alikes stays text on both drivers
          query: >-
            SELECT :n AS n, :f AS f, :s AS s, :missing AS missing, :tags AS tags, CAST(:n AS INTEGER) + 1 AS next,
            'a%b :n ?' AS literal -- :comment ?
          params: {n: "{{ .n }}", f: "{{ .f }}", s: "{{ .s }}", missing: "{{ .nothing }}", tags: "{{ .tags }}"}
          mode: single
""",
)


async def test_params_from_templates_keep_their_types(backend: Backend, make_server: MakeServer) -> None:
    srv = await make_server(backend.connections() + TYPES)
    response = await srv.client.post("/types", json={"n": 3, "f": 2.5, "s": "3", "tags": ["a", "b"]})
    assert response.status == 200, await response.text()
    row = (await response.json())["row"]
    assert row["n"] == 3 and isinstance(row["n"], int)
    assert row["f"] == 2.5
    assert row["s"] == "3"
    assert row["missing"] is None
    assert row["tags"] == '["a", "b"]'  # a list travels as JSON text on both drivers
    assert row["next"] == 4
    assert row["literal"] == "a%b :n ?"


async def test_percent_signs_are_literal_with_or_without_params(backend: Backend, make_server: MakeServer) -> None:
    srv = await make_server(
        backend.connections()
        + "pipelines:\n"
        + pipeline(
            "pct",
            """\
      - {name: bare, type: step.db_query, config: {connection: main, query: "SELECT 'x%' AS p, '1%%' AS q",
                                                   mode: single}}
      - name: with
        type: step.db_query
        config: {connection: main, query: "SELECT '%s' AS p, ? AS v", params: ["%d"], mode: list}
""",
        )
    )
    response = await srv.client.post("/pct", json={})
    body = await response.json()
    assert response.status == 200, body
    assert body["row"] == {"p": "x%", "q": "1%%"} and body["rows"] == [{"p": "%s", "v": "%d"}]


async def test_postgres_values_come_back_json_friendly(
    pg_schema_dsn: str, make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_TARGET", pg_schema_dsn)
    srv = await make_server(
        Backend("postgres", pg_schema_dsn).connections()
        + "pipelines:\n"
        + pipeline(
            "pg",
            """\
      - name: values
        type: step.db_query
        config:
          connection: main
          query: >-
            SELECT TIMESTAMPTZ '2026-01-02 03:04:05+00' AS at, DATE '2026-01-02' AS day, 12.50::numeric AS price,
                   power(2::numeric, 70) AS big, '5f0f2a4e-8d1c-4d53-9d55-2d3c4b5a6978'::uuid AS id,
                   '{"a": [1, 2]}'::jsonb AS doc, ARRAY[1, 2] AS list, :t::text AS cast_param
          params: {t: "{{ .t }}"}
          mode: single
""",
        )
    )
    response = await srv.client.post("/pg", json={"t": 7})
    assert response.status == 200, await response.text()
    assert (await response.json())["row"] == {
        "at": "2026-01-02T03:04:05+00:00",
        "day": "2026-01-02",
        "price": 12.5,
        "big": 2**70,
        "id": "5f0f2a4e-8d1c-4d53-9d55-2d3c4b5a6978",
        "doc": {"a": [1, 2]},
        "list": [1, 2],
        "cast_param": "7",
    }


async def test_sql_error_is_a_500_naming_the_step(backend: Backend, make_server: MakeServer) -> None:
    srv = await make_server(
        backend.connections()
        + "pipelines:\n"
        + pipeline(
            "bad",
            """\
      - name: broken
        type: step.db_query
        config: {connection: main, query: "SELECT * FROM no_such_table"}
""",
        )
    )
    response = await srv.client.post("/bad", json={})
    body = await response.json()
    assert response.status == 500
    assert body["step"] == "broken" and body["execution_id"] and body["connection"] == "main"
    assert "no_such_table" in body["error"] and "'broken'" in body["error"]
    assert "Traceback" not in await response.text()


async def test_unreachable_database_is_a_500_and_is_retried(make_server: MakeServer, tmp_path: Path) -> None:
    # `folder` is a directory: SQLite cannot open it as a database file.
    config = (
        (
            "connections:\n"
            '  down: {driver: postgres, dsn: "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2"}\n'
            f'  folder: {{driver: sqlite, path: "{tmp_path}"}}\n'
            "pipelines:\n"
        )
        + pipeline(
            "down",
            """\
      - {name: read, type: step.db_query, config: {connection: down, query: "SELECT 1"}}
""",
        )
        + pipeline(
            "folder",
            """\
      - {name: write, type: step.db_exec, config: {connection: folder, query: "SELECT 1"}}
""",
        )
    )
    srv = await make_server(config)
    for path, step, connection in (
        ("/down", "read", "down"),
        ("/down", "read", "down"),
        ("/folder", "write", "folder"),
    ):
        response = await srv.client.post(path, json={})
        body = await response.json()
        assert response.status == 500, body
        assert (body["step"], body["connection"]) == (step, connection)
        assert "OperationalError" in body["error"] and "dbname=x" not in body["error"]  # never the DSN


async def test_default_connection_is_the_servers_sqlite_store(make_server: MakeServer, settings: Any) -> None:
    srv = await make_server(
        "pipelines:\n"
        + pipeline(
            "own",
            """\
      - name: create
        type: step.db_exec
        config: {query: "CREATE TABLE IF NOT EXISTS notes (body TEXT)"}
      - name: insert
        type: step.db_exec
        config: {query: "INSERT INTO notes (body) VALUES (?)", params: ["{{ .body }}"]}
      - name: migrations
        type: step.db_query
        config: {connection: default, query: "SELECT max(version) AS version FROM schema_migrations", mode: single}
""",
        )
    )
    response = await srv.client.post("/own", json={"body": "hello"})
    body = await response.json()
    assert response.status == 200, body
    assert body["row"]["version"] >= 1 and body["affected_rows"] == 1
    with closing(sqlite3.connect(settings.data_dir / "workflow.db")) as db:
        assert db.execute("SELECT body FROM notes").fetchall() == [("hello",)]


async def test_default_connection_is_the_servers_postgres(pg_database: Database, make_server: MakeServer) -> None:
    srv = await make_server(
        "pipelines:\n"
        + pipeline(
            "own",
            """\
      - name: migrations
        type: step.db_query
        config: {query: "SELECT max(version) AS version, current_database() AS db FROM schema_migrations",
                 mode: single}
""",
        ),
        db=pg_database,
    )
    response = await srv.client.post("/own", json={})
    body = await response.json()
    assert response.status == 200, body
    assert body["row"]["version"] >= 1 and body["row"]["db"] == pg_database.name


async def test_a_slow_query_times_out_with_the_step_and_the_connection_recovers(
    backend: Backend, make_server: MakeServer
) -> None:
    slow = (
        "SELECT pg_sleep(5)"
        if backend.driver == "postgres"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    srv = await make_server(
        backend.connections()
        + "pipelines:\n"
        + pipeline(
            "slow",
            f"""\
      - name: wait
        type: step.db_query
        timeout: 300ms
        config: {{connection: main, query: "{slow}"}}
""",
        )
        + pipeline(
            "quick",
            """\
      - {name: count, type: step.db_query, config: {connection: main, query: "SELECT count(*) AS n FROM orders"}}
""",
        )
    )
    response = await srv.client.post("/slow", json={})
    assert response.status == 504 and (await response.json())["step"] == "wait"
    response = await srv.client.post("/quick", json={})
    assert response.status == 200 and (await response.json())["rows"] == [{"n": 0}]


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("connections", "step_config", "line", "needle"),
    [
        (
            "",
            '{query: "SELECT * FROM t WHERE id = {{ .id }}"}',
            7,
            "pipeline 'p', step 'q': step.db_query: the query must not contain templates",
        ),
        (
            "",
            '{connection: analytics, query: "SELECT 1"}',
            7,
            "pipeline 'p', step 'q': unknown connection 'analytics' (the config declares: default)",
        ),
        ("", '{query: "SELECT 1", mode: many}', 7, "mode 'many' is not one of list, single"),
        ("", '{query: "SELECT 1", params: "{{ .args }}"}', 7, "params must be a list"),
        ("", '{query: "SELECT :a, :b", params: {a: 1}}', 7, "params has no value for :b"),
        ("", '{query: "SELECT :a", params: {a: 1, typo: 2}}', 7, "params 'typo' not used by the query"),
        ("", '{query: "SELECT ?, ?", params: [1]}', 7, "2 ? placeholder(s) but params has 1"),
        ("", '{query: "SELECT $1", params: [1]}', 7, "$1: placeholders are ?"),
        ("", '{query: "SELECT 1", limit: 5}', 7, "unknown key(s) 'limit'"),
        ("", '{query: "SELECT 1", connection: "{{ .db }}"}', 7, "the connection must be a name"),
        (
            "connections:\n  x: {driver: mysql, dsn: a}\n",
            '{connection: x, query: "SELECT 1"}',
            2,
            "connection 'x': driver 'mysql' is not one of postgres, sqlite",
        ),
        (
            "connections:\n  x: {driver: postgres}\n",
            '{connection: x, query: "SELECT 1"}',
            2,
            "connection 'x': a postgres connection needs 'dsn'",
        ),
        (
            "connections:\n  default: {driver: sqlite, path: a.db}\n",
            '{query: "SELECT 1"}',
            2,
            "the name 'default' is reserved",
        ),
        ("connections: [a]\n", '{query: "SELECT 1"}', 1, "'connections' must map connection names"),
    ],
)
async def test_bad_config_is_an_error_with_file_and_line(
    make_server: MakeServer, tmp_path: Path, connections: str, step_config: str, line: int, needle: str
) -> None:
    steps = f"""\
      - name: q
        type: step.db_query
        config: {step_config}
"""
    with pytest.raises(ConfigError) as caught:
        await make_server(connections + "pipelines:\n" + pipeline("p", steps))
    problem = next((p for p in caught.value.problems if needle in p), caught.value.problems)
    assert problem.startswith(f"{tmp_path / 'config.yaml'}:{line}:"), problem


async def test_the_readme_example_runs(
    pg_schema_dsn: str, make_server: MakeServer, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text()
    config = readme.split("**Databases: `step.db_query`")[1].split("```yaml\n")[1].split("```")[0]
    monkeypatch.setenv("ANALYTICS_DSN", pg_schema_dsn)
    pg_admin(pg_schema_dsn, "CREATE TABLE orders (id TEXT, customer TEXT, total NUMERIC, created_at TIMESTAMPTZ)")
    pg_admin(
        pg_schema_dsn,
        "INSERT INTO orders VALUES ('o1', 'c1', 25.5, '2026-01-01T00:00:00Z'), "
        "('o2', 'c1', 5, now()), ('o3', 'c2', 99, now())",
    )
    settings.data_dir.mkdir()
    Backend("sqlite", str(settings.data_dir / "workflow.db")).run(ORDERS_TABLE)  # the default connection's
    srv = await make_server(config)

    response = await srv.client.get("/customers/c1/orders")
    body = await response.json()
    assert response.status == 200, body
    assert body["count"] == 1 and [(r["id"], r["total"]) for r in body["orders"]] == [("o1", 25.5)]
    assert datetime.fromisoformat(body["orders"][0]["created_at"]) == datetime(2026, 1, 1, tzinfo=UTC)

    response = await srv.client.post("/orders", json={"customer_id": "c9", "total": 3})
    assert response.status == 200 and (await response.json())["affected_rows"] == 1


async def test_a_postgres_statement_timeout_is_a_500_not_a_cancellation(
    pg_schema_dsn: str, make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_TARGET", pg_schema_dsn.replace("options='", "options='-c statement_timeout=100 "))
    srv = await make_server(
        Backend("postgres", "").connections()
        + "pipelines:\n"
        + pipeline(
            "slow",
            """\
      - {name: wait, type: step.db_query, config: {connection: main, query: "SELECT pg_sleep(2)"}}
""",
        )
        + pipeline(
            "quick",
            """\
      - {name: one, type: step.db_query, config: {connection: main, query: "SELECT 1 AS one", mode: single}}
""",
        )
    )
    response = await srv.client.post("/slow", json={})
    body = await response.json()
    assert response.status == 500 and body["step"] == "wait", body
    assert "statement timeout" in body["error"]
    response = await srv.client.post("/quick", json={})
    assert response.status == 200 and (await response.json())["row"] == {"one": 1}
