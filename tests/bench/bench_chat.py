"""Slack events through the real server: ack latency at a fixed rate, and events -> replies throughput, per backend.

    .venv/bin/python tests/bench/bench_chat.py [--backends embedded,postgres,redis] [--rate 500] [--duration 10]
        [--events 10000] [--concurrency 64] [--log-level LEVEL] [--profile] [--keep-temp]

For each backend it starts `python -m server -config <tmp>/chat.yaml --addr 127.0.0.1:P --admin-addr 127.0.0.1:Q`
with a `chat: slack:` block whose `api_base` is a fake Slack Web API (this script again, as a subprocess: it
answers `auth.test` and `chat.postMessage` and records every posted text), and one pipeline
`{type: chat, config: {platform: slack}}` whose only step is `step.chat_reply` with text `re: {{ .event_id }}`.
Every request is an `event_callback` with a unique `event_id`, signed with Slack's v0 scheme (HMAC-SHA256 of
`v0:{timestamp}:{body}`, checked once against slack_sdk's SignatureVerifier).

1. latency: --rate events/s for --duration s, open loop (each send is scheduled by the clock, never by the
   previous answer), from one aiohttp client with --connections keep-alive connections. Each request's time to
   its answer; p50/p99/max and the non-200 count. Then the replies drain, and the fake's records say whether
   every acknowledged event got exactly one reply. Targets: p99 <= 50 ms, lost == 0, twice == 0.
2. throughput: --events events as fast as the server takes them (--concurrency requests in flight), first send ->
   last reply at the fake. Target: >= 1000 events/s (set for the Redis backend; the others print their figure).

Backends: embedded (SQLite store and queue), postgres (WORKFLOW_DB_* in a fresh schema, dropped at the end),
redis (the embedded store, the queue in Redis Streams under a fresh WORKFLOW_DEPLOYMENT whose keys are deleted at
the end). Printed per phase: the CPU split from /proc (server, fake API, this client, Redis and PostgreSQL
processes, and what the rest of the machine used meanwhile). See tests/bench/README.md.

Exit code: 0 when everything ran, whether or not the targets were met; 1 when something failed to run
(`BENCHMARK FAILED: ...` on stderr, temp dir kept); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import io
import json
import os
import pstats
import resource
import secrets
import shlex
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c
import aiohttp
from aiohttp import web

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the signing secret of the bench's Slack app (tests/chat_fake.py's)
BOT_TOKEN = "xoxb-bench"
TEAM = "T0BENCH"
BACKENDS = ("embedded", "postgres", "redis")
P99_TARGET_MS = 50.0
BUSY_WAIT = 0.10  # a server loop runnable but waiting for a CPU more than this share of a phase: a busy machine
THROUGHPUT_TARGET = 1000.0
FAKE_FLAG = "--serve-fake-slack"
CPU_TICK = os.sysconf("SC_CLK_TCK")
SELF = Path(__file__).resolve()

CONFIG = """\
# written by tests/bench/bench_chat.py
name: chat-bench
chat:
  slack: {{signing_secret: "{secret}", bot_token: {token}, api_base: "{api}"}}
pipelines:
  reply:
    trigger: {{type: chat, config: {{platform: slack}}}}
    steps:
      - {{name: reply, type: step.chat_reply, config: {{text: "re: {{{{ .event_id }}}}"}}}}
"""


# `python -c` code running `python -m server` under cProfile timed by the main thread's CPU time, not the wall
# clock: on a shared machine a wall-clock profile charges the time other processes held the CPU to whatever
# call was running (a socket send that woke the peer, a log write).
PROFILED_SERVER = """\
import cProfile, runpy, sys, time
prof = cProfile.Profile(time.thread_time)
sys.argv[0] = "server"
try:
    prof.runcall(runpy.run_module, "server", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    prof.dump_stats({path!r})
"""


# --------------------------------------------------------------------------- the fake Slack Web API (a subprocess)


def serve_fake_slack(port: int) -> None:
    """The fake Slack API: auth.test, chat.postMessage (texts recorded by group), and /_stats for the bench.

    A text `re: Ev.<run>.<backend>.<phase>.<n>` belongs to the group before its last dot; /_stats?group=G gives
    the posts, distinct texts and last post time (time.monotonic(), system-wide on Linux) of G, and with full=1
    the numbers n seen, those seen more than once, and every post's time.
    """
    groups: dict[str, dict[str, Any]] = {}
    other = Counter[str]()
    ok_post = json.dumps({"ok": True, "ts": "1700000000.000200", "channel": "C0BENCH"}).encode()
    ok_auth = json.dumps({"ok": True, "user_id": "U0BENCHBOT"}).encode()

    async def post_message(request: web.Request) -> web.Response:
        raw = await request.read()
        now = time.monotonic()
        try:
            text = json.loads(raw)["text"]
            group, _, n = text.rpartition(".")
            number = int(n)
        except (ValueError, KeyError, TypeError, AttributeError):
            other["unparsable"] += 1
            return web.Response(body=ok_post, content_type="application/json")
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
            other["bad token"] += 1
        g = groups.get(group)
        if g is None:
            g = groups[group] = {"posts": 0, "counts": Counter(), "times": []}
        g["posts"] += 1
        g["counts"][number] += 1
        g["times"].append(now)
        return web.Response(body=ok_post, content_type="application/json")

    async def auth_test(request: web.Request) -> web.Response:
        await request.read()
        other["auth.test"] += 1
        return web.Response(body=ok_auth, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        g = groups.get(request.query.get("group", ""), {"posts": 0, "counts": Counter(), "times": []})
        times = g["times"]
        answer: dict[str, Any] = {
            "posts": g["posts"],
            "distinct": len(g["counts"]),
            "first": times[0] if times else None,
            "last": times[-1] if times else None,
            "other": dict(other),
        }
        if request.query.get("full"):
            answer["seen"] = sorted(g["counts"])
            answer["twice"] = sorted(n for n, k in g["counts"].items() if k > 1)
            answer["times"] = times
        return web.json_response(answer)

    async def unknown(request: web.Request) -> web.Response:
        other[f"unknown {request.path}"] += 1
        return web.json_response({"ok": False, "error": "unknown_method"})

    app = web.Application()
    app.router.add_post("/api/chat.postMessage", post_message)
    app.router.add_post("/api/auth.test", auth_test)
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{tail:.*}", unknown)
    web.run_app(app, host=c.HOST, port=port, access_log=None, print=None)


# --------------------------------------------------------------------------- signing and sending


def sign(body: bytes, timestamp: str) -> str:
    """Slack's v0 signature: `v0=` + hex HMAC-SHA256(secret, `v0:{timestamp}:{body}`)."""
    return "v0=" + hmac.new(SECRET.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def check_signing() -> str:
    """Our signer agrees with slack_sdk's SignatureVerifier (a dev dependency) when it is installed."""
    body, ts = b'{"type":"event_callback"}', str(int(time.time()))
    try:
        from slack_sdk.signature import SignatureVerifier
    except ImportError:
        return "v0 HMAC-SHA256 computed here (slack_sdk not installed: not cross-checked)"
    if not SignatureVerifier(SECRET).is_valid(body.decode(), ts, sign(body, ts)):
        raise c.BenchError("our v0 signature disagrees with slack_sdk's SignatureVerifier")
    if SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body.decode()) != sign(body, ts):
        raise c.BenchError("our v0 signature differs from slack_sdk's generate_signature")
    return "v0 HMAC-SHA256, identical to slack_sdk's SignatureVerifier.generate_signature (checked)"


def event_body(event_id: str) -> bytes:
    """An event_callback envelope as Slack sends it for a channel message."""
    now = time.time()
    return json.dumps(
        {
            "token": "bench",
            "team_id": TEAM,
            "api_app_id": "A0BENCH",
            "event": {
                "type": "message",
                "channel": "C0BENCH",
                "user": "U0BENCH",
                "text": f"bench message {event_id}",
                "ts": f"{now:.6f}",
                "channel_type": "channel",
            },
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(now),
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class Sent:
    """What the client saw for one phase's requests."""

    latencies: list[float] = field(default_factory=list)  # seconds, request issued -> answer read
    lags: list[float] = field(default_factory=list)  # seconds, scheduled send time -> issued (open loop only)
    statuses: Counter[int] = field(default_factory=Counter)  # 0: no answer (a client error)
    errors: Counter[str] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)  # non-200 answers' bodies (first 200 chars)
    acked: list[int] = field(default_factory=list)  # the numbers n answered 200
    first_send: float = float("inf")
    last_send: float = 0.0
    last_answer: float = 0.0

    @property
    def non200(self) -> int:
        return sum(k for status, k in self.statuses.items() if status != 200)


async def send_one(
    session: aiohttp.ClientSession, url: str, n: int, body: bytes, out: Sent, due: float | None = None
) -> None:
    """POST one signed event (signed now, as Slack does) and record its answer."""
    ts = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sign(body, ts)}
    began = time.monotonic()
    out.first_send = min(out.first_send, began)
    out.last_send = max(out.last_send, began)
    status, text = 0, ""
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            text = (await resp.read()).decode("utf-8", "replace")
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        out.errors[type(exc).__name__] += 1
    ended = time.monotonic()
    out.last_answer = max(out.last_answer, ended)
    out.latencies.append(ended - began)
    if due is not None:
        out.lags.append(began - due)
    out.statuses[status] += 1
    if status == 200:
        out.acked.append(n)
    elif status:
        out.bodies[text[:200]] += 1


async def open_loop(session: aiohttp.ClientSession, url: str, bodies: list[bytes], rate: float, grace: float) -> Sent:
    """Send bodies[n] at start + n/rate (by the clock, whatever the answers do); wait for every answer."""
    out = Sent()
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic() + 0.05
    for n, body in enumerate(bodies):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send_one(session, url, n, body, out, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, late = await asyncio.wait(set(tasks), timeout=grace)
        if late:
            for task in late:
                task.cancel()
            raise c.BenchError(f"{len(late)} requests still unanswered {grace:.0f}s after the last send")
    return out


async def closed_loop(session: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int) -> Sent:
    """Send every body with `concurrency` requests in flight, each worker sending its next as soon as answered."""
    out = Sent()
    todo: Iterator[tuple[int, bytes]] = iter(enumerate(bodies))

    async def worker() -> None:
        for n, body in todo:
            await send_one(session, url, n, body, out)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


# --------------------------------------------------------------------------- CPU accounting from /proc


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds; 0.0 when it is gone."""
    value = c.cpu_seconds(pid)
    return 0.0 if value != value else value  # NaN: gone


def named_cpu(names: tuple[str, ...]) -> dict[str, dict[int, float]]:
    """CPU seconds used so far by each process whose comm is one of `names` (whoever runs them), by pid."""
    found: dict[str, dict[int, float]] = {name: {} for name in names}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        if comm in found:
            fields = stat.rpartition(")")[2].split()
            found[comm][int(entry.name)] = (int(fields[11]) + int(fields[12])) / CPU_TICK
    return found


def named_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two named_cpu readings by the processes alive at the second (a process that exited
    meanwhile is left out: its time cannot be read any more, and subtracting it would go negative)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat's `cpu` line."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return float("nan"), float("nan")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy / CPU_TICK, (busy + idle + iowait) / CPU_TICK


@dataclass
class CpuMark:
    wall: float
    server: float
    fake: float
    client: float
    services: dict[str, dict[int, float]]
    machine_busy: float
    machine_total: float
    server_sched: tuple[float, float]  # the server's main (event loop) thread: seconds on a CPU, waiting for one
    client_sched: tuple[float, float]


def schedstat(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of one thread (the main one by default)."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid or pid}/schedstat").read_text().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan"), float("nan")


def cpu_mark(server_pid: int, fake_pid: int) -> CpuMark:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    busy, total = machine_cpu()
    return CpuMark(
        time.monotonic(),
        proc_cpu(server_pid),
        proc_cpu(fake_pid),
        usage.ru_utime + usage.ru_stime,
        named_cpu(("redis-server", "postgres")),
        busy,
        total,
        schedstat(server_pid),
        schedstat(os.getpid(), threading.get_native_id()),
    )


def cpu_lines(before: CpuMark, after: CpuMark, events: int) -> tuple[list[str], dict[str, float]]:
    """The CPU split of a phase as printed lines, and the facts the summary repeats."""
    wall = after.wall - before.wall
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    server = after.server - before.server
    fake = after.fake - before.fake
    client = after.client - before.client
    services = {k: named_delta(before.services[k], after.services[k]) for k in after.services}
    ours = server + fake + client + sum(services.values())
    busy = after.machine_busy - before.machine_busy
    per = 1e6 / max(events, 1)
    s_run, s_wait = (after.server_sched[i] - before.server_sched[i] for i in (0, 1))
    c_run, c_wait = (after.client_sched[i] - before.client_sched[i] for i in (0, 1))
    facts = {
        "server_us": server * per,
        "wait_share": s_wait / wall,
        "other_cores": max(busy - ours, 0.0) / wall,
    }
    warning = []
    if facts["wait_share"] > BUSY_WAIT:
        warning = [
            "WARNING: the machine was busy: the server's event loop waited for a CPU "
            f"{facts['wait_share'] * 100:.0f} % of the phase and other work used {facts['other_cores']:.2f} cores; "
            "latencies reflect the machine as much as the server (rerun when it is idle)"
        ]
    lines = [
        f"cpu over {wall:.1f} s wall ({cores} cores shared with other engineers = {cores * wall:.1f} core-s):",
        f"  server   {server:6.2f} s  ({server / wall * 100:3.0f} % of one core)  {server * per:6.0f} µs/event",
        f"  fake API {fake:6.2f} s  ({fake / wall * 100:3.0f} %)  client (this script) {client:.2f} s "
        f"({client / wall * 100:.0f} %)",
        f"  redis-server {services['redis-server']:.2f} s, postgres {services['postgres']:.2f} s "
        "(every process of that name on the machine, other engineers' included)",
        f"  machine busy {busy:.2f} core-s ({busy / (cores * wall) * 100:.0f} % of all cores); "
        f"other work (not the above) {max(busy - ours, 0.0):.2f} core-s",
        f"  per event: server {server * per:.0f} µs, server + fake + client + redis + postgres {ours * per:.0f} µs",
        f"  server event-loop thread: on a CPU {s_run:.2f} s, runnable but waiting for a CPU {s_wait:.2f} s "
        f"({s_wait / wall * 100:.0f} % of the wall time); client loop: on a CPU {c_run:.2f} s, waiting {c_wait:.2f} s "
        "(/proc/PID/task/TID/schedstat)",
        *warning,
    ]
    return lines, facts


# --------------------------------------------------------------------------- the server and its metrics


def metric_sum(text: str, name: str, **labels: str) -> float:
    return sum(v for lbl, v, _ in c.prometheus_samples(text, name) if all(lbl.get(k) == w for k, w in labels.items()))


def metric_delta_lines(before: str, after: str) -> list[str]:
    """What the server's /metrics say about the phase (deltas)."""

    def d(name: str, **labels: str) -> float:
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    events = {o: d("chat_events_total", platform="slack", outcome=o) for o in ("accepted", "duplicate", "ignored")}
    events.update({o: d("chat_events_total", platform="slack", outcome=o) for o in ("rejected", "invalid")})
    acks = d("chat_ack_duration_seconds_count", platform="slack")
    within = d("chat_ack_duration_seconds_bucket", platform="slack", le="0.05")
    ack_sum = d("chat_ack_duration_seconds_sum", platform="slack")
    replies = d("chat_reply_duration_seconds_count", platform="slack")
    reply_sum = d("chat_reply_duration_seconds_sum", platform="slack")
    jobs = {o: d("queue_jobs_total", outcome=o) for o in ("done", "retried", "dead")}
    lag = metric_sum(after, "event_loop_lag_max_seconds")
    return [
        "server /metrics (deltas): chat_events_total "
        + ", ".join(f"{k} {v:.0f}" for k, v in events.items() if v or k == "accepted"),
        f"  chat_ack_duration_seconds: {acks:.0f} acks, mean {ack_sum / acks * 1000 if acks else 0:.2f} ms, "
        f"{within / acks * 100 if acks else 0:.2f} % within 50 ms (the server's own view: handler start -> answer)",
        f"  chat_replies_total success {d('chat_replies_total', platform='slack', status='success'):.0f}, "
        f"error {d('chat_replies_total', platform='slack', status='error'):.0f}; "
        f"chat.postMessage call mean {reply_sum / replies * 1000 if replies else 0:.2f} ms",
        "  queue_jobs_total "
        + ", ".join(f"{k} {v:.0f}" for k, v in jobs.items())
        + f"; workflow_queue_depth now {metric_sum(after, 'workflow_queue_depth'):.0f}; "
        f"event_loop_lag_max_seconds {lag * 1000:.0f} ms (worst of the last 60 s)",
    ]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def pg_dsn(ns: argparse.Namespace) -> str:
    host, _, port = ns.db_host.partition(":")
    return f"host={host} port={port or 5432} dbname={ns.db_name} user={ns.db_user} connect_timeout=5"


def pg_admin(ns: argparse.Namespace, statement: str) -> None:
    import psycopg2

    try:
        with closing(psycopg2.connect(pg_dsn(ns))) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET lock_timeout = '10s'")
                cur.execute(statement)
    except psycopg2.Error as exc:
        raise c.BenchError(f"PostgreSQL at {pg_dsn(ns)!r}: {' '.join(str(exc).split())}") from None


def redis_client(ns: argparse.Namespace) -> Any:
    import redis

    return redis.Redis.from_url(f"redis://{ns.redis}", socket_connect_timeout=3, socket_timeout=10)


def redis_delete(ns: argparse.Namespace, deployment: str) -> int:
    """Delete every key of the deployment (`workflow:{<deployment>}:*`); how many there were."""
    deleted = 0
    with redis_client(ns) as client:
        batch = []
        for key in client.scan_iter(match=f"workflow:{{{deployment}}}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
    return deleted


def available(ns: argparse.Namespace, backend: str) -> str | None:
    """None when the backend's service answers, else why not."""
    if backend == "postgres":
        try:
            pg_admin(ns, "SELECT 1")
        except c.BenchError as exc:
            return str(exc)
        except ImportError:
            return "psycopg2 is not installed"
    if backend == "redis":
        try:
            with redis_client(ns) as client:
                client.ping()
        except Exception as exc:  # redis errors, a bad address, the package missing
            return f"Redis at {ns.redis}: {exc}"
    return None


@dataclass
class Backend:
    name: str
    env: dict[str, str]
    cleanup: list[tuple[str, str]] = field(default_factory=list)  # (kind, name): schema or deployment
    results: dict[str, Any] = field(default_factory=dict)


def backend_env(ns: argparse.Namespace, name: str, state: Path, run: str) -> Backend:
    env = {k: v for k, v in c.child_env().items() if not k.startswith(("WORKFLOW_", "JWT_"))}
    env.update(
        {
            "WORKFLOW_COMPONENTS_DIR": str(state / "components"),
            "WORKFLOW_DATA_DIR": str(state / "data"),
            "WORKFLOW_LOG_FORMAT": "json",
            "WORKFLOW_SHUTDOWN_TIMEOUT": "10s",
        }
    )
    if ns.log_level:
        env["WORKFLOW_LOG_LEVEL"] = ns.log_level
    backend = Backend(name, env)
    if name == "postgres":
        schema = f"bench_chat_{run}"
        env.update(
            {
                "WORKFLOW_DB_HOST": ns.db_host,
                "WORKFLOW_DB_NAME": ns.db_name,
                "WORKFLOW_DB_USER": ns.db_user,
                "WORKFLOW_DB_SCHEMA": schema,
            }
        )
        backend.cleanup.append(("schema", schema))
    elif name == "redis":
        deployment = f"bench-chat-{run}"
        env.update({"WORKFLOW_REDIS_ADDR": ns.redis, "WORKFLOW_DEPLOYMENT": deployment})
        backend.cleanup.append(("deployment", deployment))
    return backend


class FakeSlack:
    """The bench's view of the fake Slack API subprocess."""

    def __init__(self, port: int, session: aiohttp.ClientSession) -> None:
        self.url = f"http://{c.HOST}:{port}"
        self.session = session

    async def stats(self, group: str, full: bool = False) -> dict[str, Any]:
        params = {"group": group, **({"full": "1"} if full else {})}
        async with self.session.get(self.url + "/_stats", params=params) as resp:
            if resp.status != 200:
                raise c.BenchError(f"the fake Slack API answered {resp.status} to /_stats")
            return await resp.json()  # type: ignore[no-any-return]

    async def drain(self, group: str, expected: int, timeout: float, stall: float, settle: float) -> dict[str, Any]:
        """Wait until `expected` distinct replies of `group` arrived (or none for `stall` s, or `timeout`).

        Then wait `settle` s more, so a second reply sent right after the first is seen, and return the full stats.
        """
        deadline = time.monotonic() + timeout
        last_change, last_count = time.monotonic(), -1
        while True:
            stats = await self.stats(group)
            now = time.monotonic()
            if stats["distinct"] >= expected:
                break
            if stats["posts"] != last_count:
                last_change, last_count = now, stats["posts"]
            if now > deadline or now - last_change > stall:
                why = "timeout" if now > deadline else f"no new reply for {stall:.0f}s"
                print(f"  drain stopped ({why}): {stats['distinct']} of {expected} replies")
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(settle)
        return await self.stats(group, full=True)


def replies_check(sent: Sent, stats: dict[str, Any]) -> tuple[int, int, int]:
    """(lost, twice, unexpected): acked events without a reply, events replied more than once, replies to others."""
    seen = set(stats["seen"])
    acked = set(sent.acked)
    lost = len(acked - seen)
    twice = len(stats["twice"])
    unexpected = len(seen - acked)  # replies to events answered non-200 (a 503 stored nothing, so: should be 0)
    return lost, twice, unexpected


# --------------------------------------------------------------------------- one backend


async def run_backend(
    ns: argparse.Namespace, tmp: Path, run: str, backend: Backend, fake: FakeSlack, fake_pid: int, config: Path
) -> None:
    port = admin = 0
    while port == admin:
        port, admin = c.free_port(), c.free_port()
    cmd = [sys.executable, "-m", "server", "-config", str(config), "--addr", f"{c.HOST}:{port}"]
    cmd += ["--admin-addr", f"{c.HOST}:{admin}"]
    profile_path = tmp / f"server-{backend.name}.prof"
    if ns.profile:
        cmd[1:3] = ["-c", PROFILED_SERVER.format(path=str(profile_path))]
    shown = {k: v for k, v in backend.env.items() if k.startswith("WORKFLOW_")}
    print(f"\n== backend {backend.name}")
    print(f"  server: {shlex.join(cmd)}")
    print(
        f"  env: {' '.join(f'{k}={v}' for k, v in sorted(shown.items()))}"
        + ("" if ns.log_level else " (log level: the default, info)")
    )
    for kind, name in backend.cleanup:
        if kind == "schema":
            pg_admin(ns, f"CREATE SCHEMA {name}")
    server = c.ServerProcess(
        f"server ({backend.name})", cmd, backend.env, tmp / f"server-{backend.name}.log", cwd=c.ROOT
    )
    base = f"http://{c.HOST}:{port}"
    url = base + "/webhooks/slack/events"
    try:
        server.start()
        server.wait_ready(base + "/readyz", timeout=60)
        assert server.proc is not None
        pid = server.proc.pid
        timeout = aiohttp.ClientTimeout(total=ns.request_timeout)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=ns.connections, limit_per_host=ns.connections), timeout=timeout
        ) as session:

            async def metrics() -> str:
                async with session.get(base + "/metrics") as resp:
                    return await resp.text()

            def bodies(phase: str, count: int) -> list[bytes]:
                return [event_body(f"Ev.{run}.{backend.name}.{phase}.{n}") for n in range(count)]

            def group(phase: str) -> str:
                return f"re: Ev.{run}.{backend.name}.{phase}"

            # A hand-made event first: 200 with an empty body, and exactly its reply at the fake.
            sanity = Sent()
            await send_one(session, url, 0, bodies("sanity", 1)[0], sanity)
            if sanity.statuses[200] != 1:
                raise c.BenchError(
                    f"the first event was not acknowledged with 200: {dict(sanity.statuses)} {dict(sanity.bodies)} "
                    f"{dict(sanity.errors)}\n{server.log_tail()}"
                )
            got = await fake.drain(group("sanity"), 1, timeout=15, stall=15, settle=0.0)
            if got["seen"] != [0] or got["posts"] != 1:
                raise c.BenchError(
                    f"the first event's reply did not reach the fake Slack API as 're: <event_id>' once: {got}\n"
                    f"{server.log_tail()}"
                )
            print(f"  check: one signed event -> 200, and one chat.postMessage '{group('sanity')}.0' at the fake")

            if ns.warmup > 0:
                count = int(ns.rate * ns.warmup)
                warm = await open_loop(session, url, bodies("warmup", count), ns.rate, ns.request_timeout + 5)
                await fake.drain(group("warmup"), len(warm.acked), ns.drain_timeout, ns.stall_timeout, 0.0)
                print(f"  warm-up: {count} events at {ns.rate:.0f}/s, drained (not measured)")

            # ---- phase 1: ack latency at a fixed rate
            count = int(ns.rate * ns.duration)
            payload = bodies("lat", count)
            print(f"  latency: {count} events at {ns.rate:.0f}/s for {ns.duration:.0f} s, open loop ...")
            sys.stdout.flush()
            m0, cpu0 = await metrics(), cpu_mark(pid, fake_pid)
            try:
                async with asyncio.timeout(ns.duration + ns.request_timeout + 30):
                    sent = await open_loop(session, url, payload, ns.rate, ns.request_timeout + 5)
            except TimeoutError:
                raise c.BenchError(
                    f"the latency phase did not end within {ns.duration + ns.request_timeout + 30:.0f}s"
                ) from None
            drained_from = time.monotonic()
            await fake.drain(group("lat"), len(sent.acked), ns.drain_timeout, ns.stall_timeout, 0.0)
            cpu1 = cpu_mark(pid, fake_pid)
            await asyncio.sleep(ns.settle)
            stats = await fake.stats(group("lat"), full=True)
            m1 = await metrics()
            lost, twice, unexpected = replies_check(sent, stats)
            lat = sorted(sent.latencies)
            p50, p99, worst = c.percentile(lat, 50), c.percentile(lat, 99), lat[-1]
            drain_s = (stats["last"] - drained_from) if stats["last"] and stats["last"] > drained_from else 0.0
            print(f"== results: {backend.name}, ack latency at {ns.rate:.0f} events/s ({count} events)")
            print(
                f"  ack latency (request issued -> 200 read): p50 {ms(p50)}  p90 {ms(c.percentile(lat, 90))}  "
                f"p99 {ms(p99)}  p99.9 {ms(c.percentile(lat, 99.9))}  max {ms(worst)}"
            )
            lags = sorted(sent.lags)
            sent_span = sent.last_send - sent.first_send
            print(
                f"  client send lag (scheduled -> issued): p50 {ms(c.percentile(lags, 50))}  "
                f"p99 {ms(c.percentile(lags, 99))}  max {ms(lags[-1])}; sent over "
                f"{sent_span:.2f} s ({(count - 1) / max(sent_span, 1e-9):.0f}/s)"
            )
            print(
                f"  non-200: {sent.non200} {dict((k, v) for k, v in sent.statuses.items() if k != 200)} "
                f"{dict(sent.errors) or ''} {dict(sent.bodies) or ''}".rstrip()
            )
            print(
                f"  replies: {stats['posts']} posts for {len(sent.acked)} acknowledged events; lost {lost}, "
                f"twice {twice}, replies to unacknowledged events {unexpected}; the last came {drain_s:.2f} s after "
                "the last answer"
            )
            split, facts = cpu_lines(cpu0, cpu1, count)
            for line in metric_delta_lines(m0, m1) + split:
                print("  " + line)
            backend.results["latency"] = {
                **facts,
                "p50": p50,
                "p99": p99,
                "max": worst,
                "non200": sent.non200,
                "lost": lost,
                "twice": twice,
                "events": count,
            }

            # ---- phase 2: throughput, first send -> last reply
            count = ns.events
            payload = bodies("tput", count)
            print(f"  throughput: {count} events, {ns.concurrency} in flight ...")
            sys.stdout.flush()
            m0, cpu0 = await metrics(), cpu_mark(pid, fake_pid)
            try:
                async with asyncio.timeout(ns.phase_timeout):
                    sent = await closed_loop(session, url, payload, ns.concurrency)
                    stats = await fake.drain(group("tput"), len(sent.acked), ns.drain_timeout, ns.stall_timeout, 0.0)
            except TimeoutError:
                raise c.BenchError(f"the throughput phase did not end within {ns.phase_timeout:.0f}s") from None
            cpu1 = cpu_mark(pid, fake_pid)
            await asyncio.sleep(ns.settle)
            stats = await fake.stats(group("tput"), full=True)
            m1 = await metrics()
            lost, twice, unexpected = replies_check(sent, stats)
            last_reply = stats["last"] or sent.first_send
            span = max(last_reply - sent.first_send, 1e-9)
            rate = len(set(stats["seen"]) & set(sent.acked)) / span
            accept_span = max(sent.last_answer - sent.first_send, 1e-9)
            times = sorted(stats["times"])
            steady = float("nan")
            if len(times) >= 20:
                lo, hi = times[len(times) // 10], times[len(times) * 9 // 10]
                steady = (len(times) * 9 // 10 - len(times) // 10) / max(hi - lo, 1e-9)
            lat = sorted(sent.latencies)
            print(f"== results: {backend.name}, throughput ({count} events, {ns.concurrency} in flight)")
            print(
                f"  events accepted -> replies delivered: {rate:.0f} events/s (first send -> last reply "
                f"{span:.2f} s); replies/s between the 10th and 90th percentile reply: {steady:.0f}"
            )
            print(
                f"  acknowledged: {len(sent.acked)} in {accept_span:.2f} s ({len(sent.acked) / accept_span:.0f}/s), "
                f"ack p50 {ms(c.percentile(lat, 50))} p99 {ms(c.percentile(lat, 99))} max {ms(lat[-1])}; "
                f"the last reply {max(last_reply - sent.last_answer, 0.0):.2f} s after the last ack"
            )
            print(
                f"  non-200: {sent.non200} {dict((k, v) for k, v in sent.statuses.items() if k != 200)} "
                f"{dict(sent.errors) or ''} {dict(sent.bodies) or ''}".rstrip()
            )
            print(
                f"  replies: {stats['posts']} posts for {len(sent.acked)} acknowledged events; lost {lost}, "
                f"twice {twice}, replies to unacknowledged events {unexpected}"
            )
            split, facts = cpu_lines(cpu0, cpu1, count)
            for line in metric_delta_lines(m0, m1) + split:
                print("  " + line)
            backend.results["throughput"] = {
                **facts,
                "rate": rate,
                "lost": lost,
                "twice": twice,
                "non200": sent.non200,
                "events": count,
            }
            other = (await fake.stats(""))["other"]
            if {k: v for k, v in other.items() if k != "auth.test"}:
                print(f"  WARNING: the fake Slack API saw unexpected calls: {other}")
    finally:
        code = server.stop(timeout=20)
        lines = server.log_lines()
        print(f"  server stopped (exit {code}); its log has {lines} lines: {server.log_path}")
        for kind, name in backend.cleanup:
            if kind == "schema":
                pg_admin(ns, f"DROP SCHEMA IF EXISTS {name} CASCADE")
                print(f"  dropped schema {name}")
            else:
                print(f"  deleted {redis_delete(ns, name)} Redis keys of deployment {name}")
    if ns.profile:
        print_profile(profile_path)


def print_profile(path: Path) -> None:
    if not path.exists():
        print(f"  (no profile at {path}: the server did not exit normally)")
        return
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(str(path), stream=out).strip_dirs().sort_stats(order).print_stats(25)
        text = out.getvalue()
        start = text.find("   ncalls")
        print(
            f"== server profile (cProfile timed by the main thread's CPU time, sorted by {order}; "
            "the whole run, start-up included; figures under the profiler are slower)"
        )
        print("\n".join("  " + line for line in text[start:].rstrip().splitlines()))


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Slack events through the real server: ack latency and throughput.")
    p.add_argument("--backends", default="", help="comma-separated: embedded,postgres,redis (default: all available)")
    p.add_argument("--rate", type=float, default=500, help="events/s of the latency phase (default 500)")
    p.add_argument("--duration", type=float, default=10, help="seconds of the latency phase (default 10)")
    p.add_argument("--warmup", type=float, default=1, help="seconds at --rate before measuring (default 1)")
    p.add_argument("--connections", type=int, default=256, help="client connections of the latency phase")
    p.add_argument("--events", type=int, default=10_000, help="events of the throughput phase (default 10000)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight, throughput phase (default 64)")
    p.add_argument("--log-level", default="", help="WORKFLOW_LOG_LEVEL of the server (default: unset, i.e. info)")
    p.add_argument("--profile", action="store_true", help="run the server under cProfile and print its top functions")
    p.add_argument("--request-timeout", type=float, default=10, help="seconds one request may take (default 10)")
    p.add_argument("--drain-timeout", type=float, default=180, help="seconds the replies may take to drain")
    p.add_argument("--stall-timeout", type=float, default=30, help="stop draining after this long without a reply")
    p.add_argument("--phase-timeout", type=float, default=300, help="bound of the throughput phase (default 300)")
    p.add_argument("--settle", type=float, default=2, help="seconds to wait after the drain for late doubles")
    p.add_argument("--db-host", default="127.0.0.1", help="PostgreSQL HOST or HOST:PORT (default 127.0.0.1)")
    p.add_argument("--db-name", default="test", help="database (default test)")
    p.add_argument("--db-user", default="postgres", help="user (default postgres; trust auth)")
    p.add_argument("--redis", default="127.0.0.1:6379", help="Redis HOST:PORT (default 127.0.0.1:6379)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (config, logs, profiles)")
    ns = p.parse_args(argv)
    ns.backend_list = [b.strip() for b in ns.backends.split(",") if b.strip()]
    if any(b not in BACKENDS for b in ns.backend_list):
        p.error(f"--backends takes {','.join(BACKENDS)}")
    if ns.rate <= 0 or ns.duration <= 0 or ns.events < 1 or ns.concurrency < 1 or ns.connections < 1:
        p.error("--rate, --duration, --events, --concurrency and --connections must be positive")
    if ns.log_level and ns.log_level not in ("debug", "info", "warning", "error"):
        p.error("--log-level is one of debug, info, warning, error")
    return ns


def summary_lines(backend: Backend, ns: argparse.Namespace) -> list[str]:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    lat, tput = backend.results.get("latency"), backend.results.get("throughput")
    level = ns.log_level or "info"
    name = f"{backend.name:8} (log {level})"
    out = []
    if lat is None:
        return [f"{name} did not run"]
    out.append(
        f"{name} ack p99 <= {P99_TARGET_MS:.0f} ms at {ns.rate:.0f}/s: {verdict(lat['p99'] * 1000 <= P99_TARGET_MS)} "
        f"(p99 {ms(lat['p99'])}, p50 {ms(lat['p50'])}, max {ms(lat['max'])}, non-200 {lat['non200']}; "
        f"server loop waited for a CPU {lat['wait_share'] * 100:.0f} % of the phase, other work "
        f"{lat['other_cores']:.2f} cores)"
    )
    lost = lat["lost"] + (tput["lost"] if tput else 0)
    twice = lat["twice"] + (tput["twice"] if tput else 0)
    detail = f"latency phase {{}} of {lat['events']}" + (f", throughput phase {{}} of {tput['events']}" if tput else "")
    out.append(f"{name} lost == 0: {verdict(lost == 0)} ({detail.format(lat['lost'], tput['lost'] if tput else 0)})")
    out.append(
        f"{name} twice == 0: {verdict(twice == 0)} ({detail.format(lat['twice'], tput['twice'] if tput else 0)})"
    )
    if tput is not None:
        note = "" if backend.name == "redis" else "; the target is set for redis, this backend's figure is informative"
        out.append(
            f"{name} throughput >= {THROUGHPUT_TARGET:.0f} events/s: {verdict(tput['rate'] >= THROUGHPUT_TARGET)} "
            f"({tput['rate']:.0f} events/s accepted -> replied; server {tput['server_us']:.0f} µs CPU/event, "
            f"so at most {1e6 / max(tput['server_us'], 1e-9):.0f}/s on a core of its own; its loop waited for a "
            f"CPU {tput['wait_share'] * 100:.0f} %, other work {tput['other_cores']:.2f} cores{note})"
        )
    return out


async def run(ns: argparse.Namespace, tmp: Path) -> int:
    print("== machine")
    for line in c.machine_lines():
        print("  " + line)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"  ({cores} cores, shared with other engineers' work: the server, the fake API, this client, Redis and "
        "PostgreSQL all compete for them, unpinned; see each phase's cpu lines)"
    )
    print("== command")
    print("  " + shlex.join([sys.executable, *sys.argv]))
    print(f"  signing: {check_signing()}")
    wanted = ns.backend_list or list(BACKENDS)
    backends = []
    for name in wanted:
        why = available(ns, name)
        if why is None:
            backends.append(name)
        elif ns.backend_list:
            raise c.BenchError(f"backend {name} asked for but unavailable: {why}")
        else:
            print(f"  backend {name} skipped: {why}")
    run_id = secrets.token_hex(4)
    fake_port = c.free_port()
    fake = c.ServerProcess(
        "fake Slack API",
        [sys.executable, str(SELF), FAKE_FLAG, str(fake_port)],
        c.child_env(),
        tmp / "fake-slack.log",
    )
    config = tmp / "chat.yaml"
    config.write_text(CONFIG.format(secret=SECRET, token=BOT_TOKEN, api=f"http://{c.HOST}:{fake_port}/api"))
    print(f"  fake Slack API: {shlex.join(fake.cmd)} (aiohttp, records every chat.postMessage text)")
    print("== config")
    print("  " + config.read_text().rstrip().replace("\n", "\n  "))
    sys.stdout.flush()
    done: list[Backend] = []
    try:
        fake.start()
        fake.wait_ready(f"http://{c.HOST}:{fake_port}/_stats", timeout=20)
        assert fake.proc is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as control:
            api = FakeSlack(fake_port, control)
            for name in backends:
                state = tmp / name
                (state / "components").mkdir(parents=True)
                backend = backend_env(ns, name, state, run_id)
                done.append(backend)
                await run_backend(ns, tmp, run_id, backend, api, fake.proc.pid, config)
                sys.stdout.flush()
    finally:
        fake.stop()
    print("\n== summary (PASS/MISS per backend and target; shared cores, see the cpu lines)")
    for backend in done:
        for line in summary_lines(backend, ns):
            print("  " + line)
    print(f"  loadavg after: {c.loadavg_text()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == [FAKE_FLAG]:
        serve_fake_slack(int(args[1]))
        return 0
    ns = parse_args(args)
    return c.run_in_temp("bench-chat-", ns.keep_temp, lambda tmp: asyncio.run(run(ns, tmp)))


if __name__ == "__main__":
    sys.exit(main())
