"""The queue on Redis Streams: one stream and one consumer group per deployment, every step one Lua script.

Keys, all under `workflow:{<deployment>}:queue:` (one hash slot, so the scripts stay atomic):
`stream` (entries carry a job id; the group `workers` delivers them with XREADGROUP), `job:<id>` (a hash: the
job's JSON, state, attempts, last error, the current claim's receipt and stream entry), `running` (a sorted set of
claimed ids by visibility deadline: an expired one is taken over with XCLAIM), `delayed` (retries by due time,
moved back into the stream when due), `live` (waiting and running ids by enqueue time: depth and oldest age),
`dead` (the dead-letter list, by enqueue time), `dedupe:<key>` (SET NX PX, in the same script as the XADD) and
`dedupes` (their expiry times, for prune). A finished job is XACKed and XDELed; prune also trims the stream with
XTRIM MINID below the oldest pending entry, so trimming never drops an entry still pending.

Enqueues, and settling calls (ack, retry, bury, extend), made in one event-loop iteration go to Redis as one script
call over many jobs (Coalescer); those and claims each use a connection of their own (_Link).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from ..errors import QueueUnavailable
from ..store.codec import dump_json
from . import redis_scripts as scripts
from .base import DEDUPE_TTL, Job, Queue, Stats
from .batching import Coalescer

_TIMEOUT = 10.0
_MAX_CONNECTIONS = 100  # redis-py's default pool size, now waited for when all are in use
_GROUP = "workers"
_MOVE_BATCH = 100  # delayed retries moved back into the stream per claim


class _Link:
    """A connection of its own, kept open, for one kind of frequent call (enqueue, settle, claim), one call at a time.

    Cheaper than the client's pool per call: no pool to wait on (a condition, a lock and a timer) and no redis-py
    timeouts (on Python 3.11 a task and a timer per command sent, another timer per reply read); the caller bounds
    the whole call with one timer. A connection Redis closed while it was kept (a restart, an idle timeout) is
    opened again before the call is sent; a call is never sent twice (a failed one fails its callers: 503), since
    Redis may have run it already.
    """

    def __init__(self, pool: aioredis.ConnectionPool) -> None:
        kwargs: dict[str, Any] = {**pool.connection_kwargs, "socket_timeout": None}
        self._conn: Any = pool.connection_class(**kwargs)
        self._lock = asyncio.Lock()

    async def evalsha(self, sha: str, text: str, args: Sequence[Any]) -> Any:
        async with self._lock:
            reader = getattr(self._conn, "_reader", None)
            # Closed by Redis while kept (end of stream), or reset (the reader holds the error): a new one, before
            # anything is sent, so nothing can run twice.
            if reader is not None and (reader.at_eof() or reader.exception() is not None):
                await self._conn.disconnect()
            return await self._evalsha(sha, text, args)

    async def _evalsha(self, sha: str, text: str, args: Sequence[Any]) -> Any:
        conn = self._conn
        try:
            await conn.send_packed_command(conn.pack_command("EVALSHA", sha, *args), check_health=False)
            return await conn.read_response()
        except NoScriptError:  # a Redis that restarted, or had its scripts flushed: load it, then run it
            await conn.send_packed_command(conn.pack_command("SCRIPT", "LOAD", text), check_health=False)
            await conn.read_response()
            await conn.send_packed_command(conn.pack_command("EVALSHA", sha, *args), check_health=False)
            return await conn.read_response()

    async def close(self) -> None:
        await self._conn.disconnect()


def deployment_prefix(deployment: str) -> str:
    """Every key of the queue starts with this; the braces keep them in one Redis Cluster hash slot."""
    return f"workflow:{{{deployment}}}:queue:"


class RedisQueue(Queue):
    """Jobs in Redis Streams at `url`, under the keys of `deployment` (several deployments share one Redis)."""

    backend = "redis"

    def __init__(self, url: str, deployment: str) -> None:
        self.url = url
        self.deployment = deployment
        self.prefix = deployment_prefix(deployment)
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._links: dict[str, _Link] = {}
        self._enqueues = Coalescer(self._enqueue_batch)
        self._settles = Coalescer(self._settle_batch)

    async def open(self) -> None:
        """Connect and create the stream's consumer group (once per deployment)."""
        if self._client is not None:
            return
        # A blocking pool: a burst of more concurrent calls than connections waits for one (bounded by _TIMEOUT)
        # instead of failing with "Too many connections", which would refuse events with 503 while Redis is fine.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=_MAX_CONNECTIONS,
            timeout=_TIMEOUT,
            socket_timeout=_TIMEOUT,
            socket_connect_timeout=_TIMEOUT,
            decode_responses=True,
        )
        client = aioredis.Redis.from_pool(pool)
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("enqueue", scripts.ENQUEUE),
                ("claim", scripts.CLAIM),
                ("settle", scripts.SETTLE),
                ("requeue", scripts.REQUEUE),
                ("prune", scripts.PRUNE),
            )
        }
        self._links = {name: _Link(pool) for name in ("enqueue", "settle", "claim")}
        self._client = client
        try:
            async with asyncio.timeout(_TIMEOUT):
                await client.xgroup_create(self.prefix + "stream", _GROUP, id="0", mkstream=True)
        except RedisError as exc:
            if "BUSYGROUP" not in str(exc):
                self._client = None
                await client.aclose()
                raise QueueUnavailable(f"the queue cannot be reached: {exc}") from None
        except (OSError, TimeoutError) as exc:
            self._client = None
            await client.aclose()
            raise QueueUnavailable(f"the queue cannot be reached: {exc}") from None

    async def close(self) -> None:
        """Close the connections."""
        if self._client is None:
            return
        try:
            async with asyncio.timeout(_TIMEOUT):
                await self._enqueues.drain()
                await self._settles.drain()
        except TimeoutError:
            pass
        client, self._client = self._client, None
        links, self._links = self._links, {}
        async with asyncio.timeout(_TIMEOUT):
            for link in links.values():
                await link.close()
            if client is not None:
                await client.aclose()

    async def _run(self, script: str, *args: Any) -> Any:
        """Run one of the scripts, bounded; backend failures become QueueUnavailable."""
        if self._client is None:
            raise QueueUnavailable("the queue is not open")
        try:
            async with asyncio.timeout(_TIMEOUT):
                link = self._links.get(script)
                if link is not None:
                    call = self._scripts[script]
                    return await link.evalsha(call.sha, call.script, (1, self.prefix + "stream", self.prefix, *args))
                return await self._scripts[script](keys=[self.prefix + "stream"], args=[self.prefix, *args])
        except (RedisError, OSError, TimeoutError) as exc:
            raise QueueUnavailable(f"the queue cannot be reached: {exc}") from None

    async def _call(self, command: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
        """One plain command, bounded, with the same error mapping."""
        if self._client is None:
            raise QueueUnavailable("the queue is not open")
        try:
            async with asyncio.timeout(_TIMEOUT):
                return await command(self._client)
        except (RedisError, OSError, TimeoutError) as exc:
            raise QueueUnavailable(f"the queue cannot be reached: {exc}") from None

    async def enqueue(self, job: Job, dedupe_key: str | None = None, dedupe_ttl: float = DEDUPE_TTL) -> bool:
        """SET NX the de-duplication key and XADD the job together (both or neither), in a batch of enqueues."""
        if self._client is None:
            raise QueueUnavailable("the queue is not open")
        job.dedupe_key = dedupe_key
        now = job.enqueued_at = job.enqueued_at or time.time()
        ttl_ms = str(max(1, int(dedupe_ttl * 1000)))
        call = (dedupe_key or "", ttl_ms, repr(now + dedupe_ttl), job.id, _dump(job), repr(now))
        return await self._enqueues(call) == 1

    async def _enqueue_batch(self, calls: list[tuple[str, ...]]) -> Sequence[Any]:
        return await self._run("enqueue", *[arg for call in calls for arg in call])  # type: ignore[no-any-return]

    async def claim(self, consumer: str, count: int, visibility: float) -> list[Job]:
        """Due retries into the stream, expired claims taken over (XCLAIM), then new entries (XREADGROUP)."""
        now, receipt = time.time(), secrets.token_hex(8)
        flat = await self._run(
            "claim", _GROUP, consumer, count, repr(now), repr(now + visibility), receipt, _MOVE_BATCH
        )
        jobs = [_load(flat[i], int(flat[i + 1]), flat[i + 2], receipt) for i in range(0, len(flat), 3)]
        return sorted(jobs, key=lambda j: j.enqueued_at)

    async def _settle(self, job: Job, action: str, when: float = 0.0, error: str = "") -> bool:
        if self._client is None:
            raise QueueUnavailable("the queue is not open")
        return await self._settles((job.id, job.receipt or "", action, repr(when), error)) == 1

    async def _settle_batch(self, calls: list[tuple[str, ...]]) -> Sequence[Any]:
        flat = [arg for call in calls for arg in call]
        return await self._run("settle", _GROUP, *flat)  # type: ignore[no-any-return]

    async def extend(self, job: Job, visibility: float) -> bool:
        """Push the claim's deadline out."""
        return await self._settle(job, "extend", time.time() + visibility)

    async def ack(self, job: Job) -> bool:
        """XACK and XDEL the entry, delete the job."""
        return await self._settle(job, "ack")

    async def retry(self, job: Job, error: str, delay: float) -> bool:
        """XACK the entry; the job waits in the delayed set until `delay` from now."""
        return await self._settle(job, "retry", time.time() + delay, error)

    async def bury(self, job: Job, error: str) -> bool:
        """XACK the entry; the job goes to the dead-letter list."""
        return await self._settle(job, "bury", 0.0, error)

    async def _jobs(self, ids: list[str]) -> list[tuple[Job, str]]:
        """The stored jobs of `ids` with their state, skipping any finished meanwhile."""
        if not ids or self._client is None:
            return []
        try:
            async with asyncio.timeout(_TIMEOUT):
                pipe = self._client.pipeline(transaction=False)
                for job_id in ids:
                    pipe.hmget(self.prefix + "job:" + job_id, "data", "attempts", "err", "state")
                rows = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise QueueUnavailable(f"the queue cannot be reached: {exc}") from None
        return [(_load(r[0], int(r[1] or 0), r[2] or "", None), r[3]) for r in rows if r[0] is not None]

    async def pending(self, limit: int) -> list[tuple[Job, str]]:
        """Waiting and running jobs, oldest first."""
        ids = await self._call(lambda c: c.zrange(self.prefix + "live", 0, limit - 1))
        return [(job, state) for job, state in await self._jobs(list(ids)) if state in ("queued", "running")]

    async def dead(self, limit: int) -> list[Job]:
        """Dead letters, oldest first."""
        ids = await self._call(lambda c: c.zrange(self.prefix + "dead", 0, limit - 1))
        return [job for job, state in await self._jobs(list(ids)) if state == "dead"]

    async def requeue(self, job_id: str) -> bool:
        """Put a dead job back into the stream with its attempts reset."""
        return int(await self._run("requeue", job_id)) == 1

    async def status(self, job_id: str) -> tuple[str, str | None] | None:
        """The stored job's state and last error."""
        state, error = await self._call(lambda c: c.hmget(self.prefix + "job:" + job_id, ["state", "err"]))
        return (state, error or None) if state is not None else None

    async def stats(self) -> Stats:
        """Depth and oldest age from the live set, dead from the dead-letter list: the same on every replica."""
        if self._client is None:
            raise QueueUnavailable("the queue is not open")
        try:
            async with asyncio.timeout(_TIMEOUT):
                pipe = self._client.pipeline(transaction=True)
                pipe.zcard(self.prefix + "live")
                pipe.zcard(self.prefix + "dead")
                pipe.zrange(self.prefix + "live", 0, 0, withscores=True)
                depth, dead, oldest = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise QueueUnavailable(f"the queue cannot be reached: {exc}") from None
        age = max(0.0, time.time() - float(oldest[0][1])) if oldest else 0.0
        return Stats(int(depth), int(dead), age)

    async def prune(self) -> int:
        """Drop expired de-duplication records and trim the stream below its oldest pending entry."""
        return int(await self._run("prune", _GROUP, repr(time.time())))


def _dump(job: Job) -> str:
    """The job's JSON, encoded once (dump_json never fails: what JSON cannot hold in the payload is converted)."""
    data = {
        "id": job.id,
        "kind": job.kind,
        "pipeline": job.pipeline,
        "workflow_type": job.workflow_type,
        "payload": job.payload,
        "enqueued_at": job.enqueued_at,
        "dedupe_key": job.dedupe_key,
    }
    return dump_json(data) or "{}"


def _load(data: str, attempts: int, error: str, receipt: str | None) -> Job:
    d = json.loads(data)
    payload = d.get("payload")
    return Job(
        id=d["id"],
        pipeline=d["pipeline"],
        workflow_type=d["workflow_type"],
        payload=payload if isinstance(payload, dict) else {},
        kind=d["kind"],
        attempts=attempts,
        enqueued_at=float(d["enqueued_at"]),
        dedupe_key=d.get("dedupe_key"),
        receipt=receipt,
        last_error=error or None,
    )
