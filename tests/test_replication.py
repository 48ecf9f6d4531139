"""Replicas that share PostgreSQL and Redis converge on the store's components (real servers, no mocks)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from server.cluster.bases import SYNC_FILE
from server.keys import RELOADER, REPLICATOR
from server.settings import SettingsError, from_environment
from tests.conftest import Replica, StartReplica, equals, hello, listening, metric_value, ready, until


async def stop(replica: Replica) -> None:
    await replica.client.close()
    await replica.admin.close()


async def test_a_change_through_any_replica_serves_on_every_replica(start_replica: StartReplica) -> None:
    a, b, c = [await start_replica(name) for name in ("a", "b", "c")]
    for replica in (a, b, c):
        await until(lambda r=replica: listening(r))

    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    for replica in (a, b, c):
        await until(lambda r=replica: equals(r.version(), 1))
        assert (replica.folder / "hello.py").read_text() == hello(1)

    assert (await b.call("PUT", "/hello", {"source": hello(2)}))[0] == 200
    for replica in (a, b, c):
        await until(lambda r=replica: equals(r.version(), 2))

    # The listing on any replica shows what each one serves, all at the store's version.
    await until(lambda: _replicas_at(a, 2, count=3))
    status, body = await c.call("GET", "/hello")
    assert status == 200 and body["version"] == 2 and body["source"] == hello(2)
    assert {r["replica"] for r in body["replicas"]} == {"a", "b", "c"}

    assert metric_value(await (await b.client.get("/metrics")).text(), "dynamic_components") == 1
    assert (await c.call("DELETE", "/hello"))[0] == 204
    for replica in (a, b, c):
        await until(lambda r=replica: equals(r.version(), None))
        await until(lambda r=replica: not (r.folder / "hello.py").exists())
    assert metric_value(await (await b.client.get("/metrics")).text(), "dynamic_components") == 0


async def test_a_file_saved_on_one_replica_reaches_the_others(start_replica: StartReplica) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    await until(lambda: ready(a))
    await until(lambda: listening(b))
    (a.folder / "hello.py").write_text(hello(1))
    await until(lambda: equals(b.version(), 1))
    (a.folder / "hello.py").write_text(hello(2))
    await until(lambda: equals(b.version(), 2))
    (a.folder / "hello.py").unlink()
    await until(lambda: equals(b.version(), None))
    rows = await a.client.app[REPLICATOR].store.list_audit(target="hello")
    assert [r.action for r in reversed(rows)] == ["component.file"] * 3 and rows[0].who == "file@a"


async def test_a_replica_that_missed_changes_catches_up_when_it_starts(start_replica: StartReplica) -> None:
    a = await start_replica("a")
    await until(lambda: ready(a))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    b = await start_replica("b")
    await until(lambda: ready(b))
    assert await b.version() == 1  # ready means reconciled: the store's version was already serving
    await stop(b)

    assert (await a.call("PUT", "/hello", {"source": hello(2)}))[0] == 200
    b = await start_replica("b")  # same folder: it still holds version 1
    await until(lambda: ready(b))
    assert await b.version() == 2 and (b.folder / "hello.py").read_text() == hello(2)


async def test_folder_only_components_are_uploaded_and_the_store_wins_conflicts(
    start_replica: StartReplica, tmp_path: Path
) -> None:
    (tmp_path / "a" / "components").mkdir(parents=True)
    (tmp_path / "a" / "components" / "hello.py").write_text(hello(1))
    a = await start_replica("a")
    await until(lambda: ready(a))
    row = await a.client.app[REPLICATOR].store.get_component("hello")
    assert row is not None and row.source == hello(1) and row.updated_by == "replica@a"

    # b ships another hello.py and has never agreed with the store: the store's version wins.
    (tmp_path / "b" / "components").mkdir(parents=True)
    (tmp_path / "b" / "components" / "hello.py").write_text(hello(7))
    b = await start_replica("b")
    await until(lambda: ready(b))
    assert await b.version() == 1 and (b.folder / "hello.py").read_text() == hello(1)
    kept = list((tmp_path / "b" / "data" / "conflicts").iterdir())
    assert [p.read_text() for p in kept] == [hello(7)]
    assert (await a.client.app[REPLICATOR].store.get_component("hello")).version == 1  # not uploaded


async def test_a_file_edited_while_the_replica_was_down_is_uploaded(start_replica: StartReplica) -> None:
    a = await start_replica("a")
    await until(lambda: ready(a))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    await until(lambda: (a.folder / SYNC_FILE).exists() and '"version": 1' in (a.folder / SYNC_FILE).read_text())
    await stop(a)
    (a.folder / "hello.py").write_text(hello(3))  # only this folder moved since it last agreed with the store
    a = await start_replica("a")
    await until(lambda: ready(a))
    assert await a.version() == 3
    row = await a.client.app[REPLICATOR].store.get_component("hello")
    assert row.source == hello(3) and row.version == 2


async def test_without_redis_replicas_converge_at_the_periodic_reconcile(start_replica: StartReplica) -> None:
    a = await start_replica("a", redis=None, reconcile_interval=0.2)
    b = await start_replica("b", redis=None, reconcile_interval=0.2)
    await until(lambda: ready(a))
    await until(lambda: ready(b))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    await until(lambda: equals(b.version(), 1))
    assert (await b.health())["checks"]["replication"]["status"] == "ok"
    assert "redis" not in (await b.health())["checks"]["replication"]
    # Periodic reconciles list versions only; a source is read when there is a version to follow.
    replicator, reads = b.client.app[REPLICATOR], []
    read_source = replicator.store.get_component

    async def counted(cid: str) -> Any:
        reads.append(cid)
        return await read_source(cid)

    replicator.store.get_component = counted  # on this store object only
    done = replicator.reconciles
    await until(lambda: replicator.reconciles >= done + 3)
    assert reads == []
    assert (await a.call("PUT", "/hello", {"source": hello(2)}))[0] == 200
    await until(lambda: equals(b.version(), 2))
    assert reads == ["hello"]


async def test_a_version_another_replica_cannot_load_keeps_its_old_one_serving(start_replica: StartReplica) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    await until(lambda: ready(a))
    await until(lambda: listening(b))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    await until(lambda: equals(b.version(), 1))
    # Version 2 fails to import on b only (the file knows where it is).
    picky = hello(2) + "if '/b/components/' in __file__:\n    raise RuntimeError('not on replica b')\n"
    assert (await a.call("PUT", "/hello", {"source": picky}))[0] == 200
    await until(lambda: "hello" in b.client.app[RELOADER].failures)
    assert await a.version() == 2 and await b.version() == 1
    assert "not on replica b" in b.client.app[RELOADER].failures["hello"].error
    # The listing shows it: a serves version 2; b still serves version 1 and reports the refusal.
    await until(lambda: _replica_status(a, "b", "error"))
    status, body = await a.call("GET", "/hello")
    assert status == 200
    by_name = {r["replica"]: r for r in body["replicas"]}
    assert (by_name["a"]["version"], by_name["a"]["status"], by_name["a"]["error"]) == (2, "serving", None)
    assert by_name["b"]["version"] == 1 and "not on replica b" in by_name["b"]["error"]
    assert (await b.health())["status"] == "degraded"


async def _replicas_at(replica: Replica, version: int, *, count: int) -> bool:
    status, body = await replica.call("GET", "/hello")
    versions = [r["version"] for r in body.get("replicas", [])] if status == 200 else []
    return versions == [version] * count


async def _replica_status(replica: Replica, name: str, status: str) -> bool:
    code, body = await replica.call("GET", "/hello")
    return code == 200 and any(r["replica"] == name and r["status"] == status for r in body["replicas"])


def test_replication_settings_come_from_the_environment() -> None:
    settings = from_environment(
        {
            "WORKFLOW_REDIS_ADDR": "10.0.0.5:6380",
            "WORKFLOW_ADDR": ":9000",
            "WORKFLOW_DB_HOST": "db:5433",
            "WORKFLOW_DB_SCHEMA": "team_a",
            "WORKFLOW_RECONCILE_INTERVAL": "5s",
        }
    )
    assert settings.redis_addr == "redis://10.0.0.5:6380" and settings.reconcile_interval == 5.0
    assert settings.replica_id.endswith(":9000")
    assert "options='-c search_path=team_a'" in settings.db.dsn()
    named = from_environment({"WORKFLOW_REDIS_ADDR": "rediss://u:p@cache:6379/2", "WORKFLOW_REPLICA_ID": "pod-7"})
    assert named.redis_addr == "rediss://u:p@cache:6379/2" and named.replica_id == "pod-7" and named.db is None
    for env, name in (
        ({"WORKFLOW_REDIS_ADDR": "cache"}, "WORKFLOW_REDIS_ADDR"),
        ({"WORKFLOW_DB_HOST": "db", "WORKFLOW_DB_SCHEMA": "a;drop"}, "WORKFLOW_DB_SCHEMA"),
    ):
        with pytest.raises(SettingsError, match=name):
            from_environment(env)


async def test_malformed_and_own_events_are_ignored(
    start_replica: StartReplica, redis_addr: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    await until(lambda: listening(a))
    await until(lambda: listening(b))
    bus = b.client.app[REPLICATOR].bus
    client = redis.Redis.from_url(f"redis://{redis_addr}")
    try:
        for junk in (b"not json", b"[1, 2]", json.dumps({"replica": "b", "id": "hello"}).encode()):
            await client.publish(bus.channel, junk)
    finally:
        await client.aclose()
    await until(lambda: caplog.text.count("ignored a malformed event") == 4)  # two each on a and b
    assert bus.received == 0  # b's own event (the third) is not received as another replica's
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    await until(lambda: equals(b.version(), 1))  # the subscription survived the junk
    assert bus.received == 1


async def test_a_broken_file_on_one_replica_is_neither_uploaded_nor_spread_as_a_deletion(
    start_replica: StartReplica,
) -> None:
    a, b = await _two_serving_hello(start_replica)
    await stop(b)
    (b.folder / "hello.py").write_text(hello(2) + "\ndef broken(:\n")  # edited while b was down, badly
    b = await start_replica("b")
    await until(lambda: ready(b))
    # b has nothing of hello in service, only the error; that is not "deleted here" for the others.
    assert "hello" in b.client.app[RELOADER].failures and "hello" not in b.client.app[RELOADER].components
    await b.client.app[REPLICATOR].reconcile()  # what the periodic one would do
    row = await a.client.app[REPLICATOR].store.get_component("hello")
    assert (row.version, row.deleted, row.source) == (1, False, hello(1))
    assert await a.version() == 1
    (b.folder / "hello.py").write_text(hello(2))  # fixed: now it goes everywhere
    await until(lambda: equals(a.version(), 2))
    assert (await a.client.app[REPLICATOR].store.get_component("hello")).version == 2


# --------------------------------------------------------------------------- CONTRACT §9: nothing stored is lost


async def _two_serving_hello(start_replica: StartReplica) -> tuple[Replica, Replica]:
    """Replicas a and b, both listening, both serving hello v1, b's folder recording that agreement."""
    a, b = await start_replica("a"), await start_replica("b")
    await until(lambda: listening(a))
    await until(lambda: listening(b))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    await until(lambda: equals(b.version(), 1))
    await until(lambda: '"version": 1' in (b.folder / SYNC_FILE).read_text())
    return a, b


def _remove_component_files(folder: Path) -> None:
    """What `rm components/*.py` does: the hidden record of the last agreement with the store stays."""
    for path in folder.glob("*.py"):
        path.unlink()
    assert (folder / SYNC_FILE).exists()


async def test_files_removed_while_one_replica_was_stopped_are_restored_not_deleted(
    start_replica: StartReplica,
) -> None:
    a, b = await _two_serving_hello(start_replica)
    await stop(b)
    _remove_component_files(b.folder)
    b = await start_replica("b")
    await until(lambda: ready(b))
    assert await b.version() == 1 and (b.folder / "hello.py").read_text() == hello(1)
    row = await a.client.app[REPLICATOR].store.get_component("hello")
    assert (row.version, row.deleted) == (1, False)
    assert await a.version() == 1


async def test_files_removed_on_every_stopped_replica_come_back_everywhere(start_replica: StartReplica) -> None:
    replicas = [await start_replica(name) for name in ("a", "b", "c")]
    for replica in replicas:
        await until(lambda r=replica: listening(r))
    assert (await replicas[0].call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    await until(lambda: equals(replicas[1].version(), 1))
    assert (await replicas[1].call("PUT", "/hello", {"source": hello(2)}))[0] == 200
    for replica in replicas:
        await until(lambda r=replica: equals(r.version(), 2))
        await until(lambda r=replica: '"version": 2' in (r.folder / SYNC_FILE).read_text())
    for replica in replicas:
        await stop(replica)
        _remove_component_files(replica.folder)
    replicas = [await start_replica(name) for name in ("a", "b", "c")]
    for replica in replicas:
        await until(lambda r=replica: ready(r))
    for replica in replicas:
        assert await replica.version() == 2 and (replica.folder / "hello.py").read_text() == hello(2)
    row = await replicas[0].client.app[REPLICATOR].store.get_component("hello")
    assert (row.version, row.deleted, row.source) == (2, False, hello(2))


async def test_a_fresh_empty_volume_is_filled_from_the_store(start_replica: StartReplica, tmp_path: Path) -> None:
    a = await start_replica("a")
    await until(lambda: ready(a))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    fresh = await start_replica("fresh")  # a new pod: no folder, no data, no record of any agreement
    await until(lambda: ready(fresh))
    assert await fresh.version() == 1 and (fresh.folder / "hello.py").read_text() == hello(1)
    assert json.loads((fresh.folder / SYNC_FILE).read_text()) == {"hello": {"version": 1, "sha256": _sha(hello(1))}}


async def test_a_file_deleted_while_the_server_runs_is_deleted_everywhere(start_replica: StartReplica) -> None:
    a, b = await _two_serving_hello(start_replica)
    (a.folder / "hello.py").unlink()  # a deliberate act, seen by a's watcher
    await until(lambda: equals(b.version(), None))
    await until(lambda: not (b.folder / "hello.py").exists())
    row = await b.client.app[REPLICATOR].store.get_component("hello")
    assert (row.version, row.deleted) == (2, True)
    assert (await a.client.app[REPLICATOR].store.list_audit(target="hello"))[0].action == "component.file"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- races found in review


async def test_putting_back_the_serving_version_after_another_replica_moved_on_is_a_real_change(
    start_replica: StartReplica,
) -> None:
    a = await start_replica("a", redis=None)
    await until(lambda: ready(a))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    store = a.client.app[REPLICATOR].store
    await store.put_component("hello", hello(2), _sha(hello(2)), "b")  # b's write; its event has not reached a
    status, body = await a.call("PUT", "/hello", {"source": hello(1)})  # the admin puts v1 back through a
    assert (status, body["version"]) == (200, 3)
    row = await store.get_component("hello")
    assert (row.version, row.source) == (3, hello(1))
    await a.client.app[REPLICATOR].reconcile()
    assert await a.version() == 1


async def test_a_reconcile_that_read_the_store_before_a_put_does_not_undo_it(start_replica: StartReplica) -> None:
    a = await start_replica("a", redis=None)
    await until(lambda: ready(a))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    replicator = a.client.app[REPLICATOR]
    read, gate = asyncio.Event(), asyncio.Event()
    real = replicator.store.get_component

    async def held(cid: str) -> Any:
        row = await real(cid)
        read.set()
        await gate.wait()
        return row

    replicator.store.get_component = held  # type: ignore[method-assign]
    following = asyncio.create_task(replicator.on_event({"id": "hello"}))  # reads v1, then waits
    await read.wait()
    replicator.store.get_component = real  # type: ignore[method-assign]
    assert (await a.call("PUT", "/hello", {"source": hello(2)}))[0] == 200
    gate.set()
    await following
    assert await a.version() == 2 and "VERSION = 2" in (a.folder / "hello.py").read_text()
    assert (await real("hello")).version == 2 and replicator.synced["hello"].version == 2


async def test_an_upload_decided_on_an_old_listing_never_overwrites_another_replicas_write(
    start_replica: StartReplica,
) -> None:
    a = await start_replica("a", redis=None)
    await until(lambda: ready(a))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    replicator = a.client.app[REPLICATOR]
    store = replicator.store
    real_put, real_list = store.put_component, store.component_versions

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise OSError("store down")

    store.put_component = down  # type: ignore[method-assign]
    (a.folder / "hello.py").write_text(hello(2))  # saved while the store is down: serves here, uploaded later
    await until(lambda: replicator.manager.components["hello"].sha256 == _sha(hello(2)))
    store.put_component = real_put  # type: ignore[method-assign]
    listed, gate = asyncio.Event(), asyncio.Event()

    async def held() -> Any:
        rows = await real_list()
        listed.set()
        await gate.wait()
        return rows

    store.component_versions = held  # type: ignore[method-assign]
    reconciling = asyncio.create_task(replicator.reconcile())
    await listed.wait()
    store.component_versions = real_list  # type: ignore[method-assign]
    await real_put("hello", hello(3), _sha(hello(3)), "b")  # replica b writes after the listing
    gate.set()
    await reconciling
    row = await store.get_component("hello")
    assert (row.version, row.source) == (2, hello(3))  # b's write stands
    await replicator.reconcile()  # both moved: the store wins, a's edit is kept as a conflict
    assert await a.version() == 3
    kept = list((a.folder.parent / "data" / "conflicts").iterdir())
    assert [p.read_text() for p in kept] == [hello(2)]


async def test_a_folder_that_cannot_be_written_does_not_stop_replication(
    start_replica: StartReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await start_replica("a", redis=None, reconcile_interval=0.2)
    await until(lambda: ready(a))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    failing: list[Path] = []

    def full_disk(path: Path, text: str) -> None:
        failing.append(path)
        raise OSError(28, "No space left on device")

    from server.cluster import reconciler

    monkeypatch.setattr(reconciler, "write_atomically", full_disk)
    store = a.client.app[REPLICATOR].store
    await store.put_component("hello", hello(2), _sha(hello(2)), "b")
    await until(lambda: len(failing) >= 2)  # tried, failed, and tried again at the next reconcile
    assert await a.version() == 1
    monkeypatch.undo()
    await until(lambda: equals(a.version(), 2))  # the loop is alive: once the disk has room, it follows
    assert (await a.health())["checks"]["replication"]["status"] == "ok"


async def test_a_deletion_the_store_missed_survives_a_restart(start_replica: StartReplica) -> None:
    a = await start_replica("a", redis=None)
    await until(lambda: ready(a))
    assert (await a.call("POST", "", {"id": "hello", "source": hello(1)}))[0] == 201
    store = a.client.app[REPLICATOR].store
    real_delete = store.delete_component

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise OSError("store down")

    store.delete_component = down  # type: ignore[method-assign]
    (a.folder / "hello.py").unlink()  # a deliberate deletion the store cannot hear of now
    await until(lambda: equals(a.version(), None))
    await until(lambda: "hello" in json.loads((a.folder / SYNC_FILE).read_text()).get("_deleted_here", []))
    store.delete_component = real_delete  # type: ignore[method-assign]
    await stop(a)
    a = await start_replica("a", redis=None)  # restarted before any reconcile told the store
    await until(lambda: ready(a))
    assert not (a.folder / "hello.py").exists() and await a.version() is None
    row = await a.client.app[REPLICATOR].store.get_component("hello")
    assert (row.version, row.deleted) == (2, True)
