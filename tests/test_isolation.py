"""Candidate isolation: hostile component versions are refused with their reason while the server keeps serving.

Real files in tmp_path, a real server on loopback (admin API and the watched folder), the real fork server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest

from server.keys import RELOADER
from server.reload.isolation import Isolation
from server.reload.loader import Source
from server.reload.manager import ComponentManager
from tests.conftest import ROOT, Server, free_port, server_command, until
from tests.hub import HUB

SECRET = "i" * 40
API = "/api/dynamic/components"
CONFIG = """\
pipelines:
  hello:
    trigger: {type: http, config: {path: /hello, method: GET}}
    steps:
      - {name: hello, type: step.hello}
  other:
    trigger: {type: http, config: {path: /other, method: GET}}
    steps:
      - {name: other, type: step.other}
"""
REGISTER_AND_RAISE = "from server import hookimpl\n\n\n@hookimpl\ndef register_steps(register):\n    raise {}\n"
# name: (source, line, reason); the reason is what follows `path[:line]: ` in the error.
HOSTILE = {
    "keyboard-interrupt": ("raise KeyboardInterrupt()\n", 1, "failed to import: KeyboardInterrupt"),
    "os-exit": ("import os\nos._exit(3)\n", None, "import exited the candidate process with code 3"),
    "system-exit-in-register": (REGISTER_AND_RAISE.format("SystemExit(1)"), 6, "registration failed: SystemExit: 1"),
    "generator-exit-in-register": (
        REGISTER_AND_RAISE.format("GeneratorExit()"),
        6,
        "registration failed: GeneratorExit",
    ),
    "memory-bomb": ("b = bytearray(10**11)\n", 1, "failed to import: MemoryError (a candidate may allocate 256 MB)"),
    "growing-list": (
        "x = []\nwhile True:\n    x.append(' ' * 10**6)\n",
        3,
        "failed to import: MemoryError (a candidate may allocate 256 MB)",
    ),
    "segfault": (
        "import ctypes\nctypes.string_at(0)\n",
        None,
        "import crashed the candidate process (SIGSEGV, signal 11)",
    ),
    "busy-loop": ("while True:\n    pass\n", None, "import did not finish in 1 s"),
}


def hello(version: int, step: str = "step.hello") -> str:
    """A component whose step answers its version."""
    return (
        "from server import hookimpl\n\n\n"
        f"async def hello(ctx):\n    return {{'version': {version}}}\n\n\n"
        f"@hookimpl\ndef register_steps(register):\n    register({step!r}, hello)\n"
    )


ADMIN = {
    "Authorization": "Bearer "
    + pyjwt.encode({"sub": "ada", "role": "admin", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
}


@pytest.fixture(autouse=True)
def hub() -> None:
    HUB.clear()


@pytest.fixture
def components(tmp_path: Path) -> Path:
    directory = tmp_path / "components"
    directory.mkdir()
    return directory


@pytest.fixture
def start(make_server) -> Callable[..., Awaitable[Server]]:
    """A server with the admin API, a short import timeout and a small memory allowance for candidates."""

    async def start(**overrides: Any) -> Server:
        overrides = {
            "jwt_secret": SECRET,
            "debounce": 0.01,
            "import_timeout": 1.0,
            "import_memory_mb": 256,
            **overrides,
        }
        return await make_server(CONFIG, **overrides)

    return start


async def create(server: Server, cid: str, source: str) -> tuple[int, Any]:
    response = await server.admin.post(API, json={"id": cid, "source": source}, headers=ADMIN)
    return response.status, await response.json()


async def put(server: Server, cid: str, source: str) -> tuple[int, Any]:
    response = await server.admin.put(f"{API}/{cid}", json={"source": source}, headers=ADMIN)
    return response.status, await response.json()


async def answer(server: Server, path: str) -> tuple[int, Any]:
    """The status and the version that served `path`."""
    response = await server.client.get(path)
    return response.status, (await response.json()).get("version")


def manager(server: Server) -> ComponentManager:
    return server.client.app[RELOADER]


def expected(path: Path, line: int | None, reason: str) -> dict[str, Any]:
    """The body of a 422 for a refused version."""
    body: dict[str, Any] = {"error": f"{path}:{line}: {reason}" if line else f"{path}: {reason}", "file": str(path)}
    if line:
        body["line"] = line
    return body


# --------------------------------------------------------------------------- hostile versions


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_upload_is_refused_and_the_old_version_keeps_serving(start, components, name) -> None:
    source, line, reason = HOSTILE[name]
    server = await start()
    assert (await create(server, "hello", hello(1)))[0] == 201

    assert await put(server, "hello", source) == (422, expected(components / "hello.py", line, reason))
    assert await answer(server, "/hello") == (200, 1)
    assert (components / "hello.py").read_text() == hello(1)
    # The server still takes other changes, and the refused component's own next version.
    assert (await create(server, "other", hello(1, "step.other")))[0] == 201
    assert await answer(server, "/other") == (200, 1)
    assert (await put(server, "hello", hello(2)))[0] == 200
    assert await answer(server, "/hello") == (200, 2)


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_file_is_refused_and_the_old_version_keeps_serving(start, components, name) -> None:
    source, line, reason = HOSTILE[name]
    server = await start()
    path = components / "hello.py"
    path.write_text(hello(1))
    await until(lambda: "hello" in manager(server).components)

    path.write_text(source)
    failure = await until(lambda: manager(server).failures.get("hello"), timeout=10)
    assert (failure.error, failure.line) == (expected(path, line, reason)["error"], line)
    assert await answer(server, "/hello") == (200, 1)
    response = await server.client.get("/healthz")
    health = await response.json()
    assert (response.status, health["checks"]["components"]) == (
        200,
        {
            "status": "degraded",
            "in_service": 1,
            "failing": 1,
            "failing_ids": ["hello"],
            "errors": {"hello": failure.error},
            "stuck_loads": [],
        },
    )
    (components / "other.py").write_text(hello(1, "step.other"))
    await until(lambda: "other" in manager(server).components)
    assert await answer(server, "/other") == (200, 1)


async def test_a_hanging_import_blocks_no_other_change(start, components) -> None:
    server = await start()
    assert (await create(server, "hello", hello(1)))[0] == 201
    began = time.monotonic()
    hanging = asyncio.ensure_future(put(server, "hello", "while True:\n    pass\n"))
    await asyncio.sleep(0.1)  # the hanging version is being checked now

    assert (await create(server, "other", hello(1, "step.other")))[0] == 201
    assert time.monotonic() - began < 0.8  # well before the hanging check's 1 s timeout
    assert await answer(server, "/other") == (200, 1)
    assert not hanging.done()
    assert await hanging == (422, expected(components / "hello.py", None, "import did not finish in 1 s"))
    assert time.monotonic() - began >= 1.0
    assert await answer(server, "/hello") == (200, 1)


async def test_an_import_that_hangs_only_in_the_server_is_abandoned_and_shown_as_stuck(start, components) -> None:
    # In the candidate process HUB is that process's own empty dict: only the server's import blocks.
    HUB["release"] = release = __import__("threading").Event()
    server = await start()
    assert (await create(server, "hello", hello(1)))[0] == 201
    source = "from tests.hub import HUB\nif 'release' in HUB:\n    HUB['release'].wait(30)\n" + hello(2)
    try:
        status, body = await put(server, "hello", source)
        assert (status, body) == (
            422,
            expected(
                components / "hello.py", None, "import did not finish in 1 s in the server (its thread is abandoned)"
            ),
        )
        assert await answer(server, "/hello") == (200, 1)
        response = await server.client.get("/healthz")
        check = (await response.json())["checks"]["components"]
        # Degraded for the stuck load; the refused upload changed nothing, so it is the component's last_error.
        assert (response.status, check["status"], check["failing_ids"]) == (200, "degraded", [])
        assert [(s["id"], s["path"]) for s in check["stuck_loads"]] == [("hello", str(components / "hello.py"))]
        assert check["stuck_loads"][0]["seconds"] >= 1.0
        assert (await create(server, "other", hello(1, "step.other")))[0] == 201  # the lock was let go
    finally:
        release.set()
    await until(lambda: manager(server).isolation.stuck_loads() == [])


# --------------------------------------------------------------------------- validate


def test_validate_reports_hostile_files_with_their_reason(tmp_path: Path, components: Path) -> None:
    names = ["keyboard-interrupt", "os-exit", "system-exit-in-register", "segfault", "busy-loop"]
    for name in names:
        (components / f"{name.replace('-', '_')}.py").write_text(HOSTILE[name][0])
    (components / "greet.py").write_text(hello(1, "step.greet"))
    config = tmp_path / "greet.yaml"
    config.write_text(
        "pipelines:\n  greet:\n    trigger: {type: manual}\n    steps:\n      - {name: greet, type: step.greet}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    env.update(WORKFLOW_COMPONENTS_DIR=str(components), WORKFLOW_IMPORT_TIMEOUT="1s")
    result = subprocess.run(
        [sys.executable, "-m", "server", "validate", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        expected(components / f"{n.replace('-', '_')}.py", HOSTILE[n][1], HOSTILE[n][2])["error"]
        for n in sorted(names, key=lambda n: n.replace("-", "_"))
    ]
    assert (result.returncode, result.stdout, result.stderr.splitlines()) == (1, "", problems)


# --------------------------------------------------------------------------- the isolation client


def source(cid: str, text: str) -> Source:
    return Source.from_text(cid, f"/nowhere/{cid}.py", text)


async def test_many_candidates_at_once_are_answered_while_one_hangs() -> None:
    async with Isolation(timeout=3.0) as isolation:
        assert await isolation.verdict(source("warm", hello(0)), None) is None  # the fork server is up

        async def timed(item: Source) -> tuple[float, Any]:
            began = time.monotonic()
            refusal = await isolation.verdict(item, None)
            return time.monotonic() - began, refusal and refusal.message

        hanging = asyncio.ensure_future(timed(source("hang", "import time\ntime.sleep(60)\n")))
        good = await asyncio.gather(*(timed(source(f"c{i}", hello(i, f"step.c{i}"))) for i in range(20)))
        broken = await timed(source("broken", "raise KeyboardInterrupt()\n"))
        assert [refusal for _, refusal in good] == [None] * 20
        assert broken[1] == "/nowhere/broken.py:1: failed to import: KeyboardInterrupt"
        assert max(seconds for seconds, _ in [*good, broken]) < 1.5  # well before the hang's 3 s
        assert not hanging.done()
        seconds, refusal = await hanging
        assert refusal == "/nowhere/hang.py: import did not finish in 3 s"
        assert 3.0 <= seconds < 4.5


async def test_a_killed_helper_is_replaced_and_a_candidate_in_flight_is_retried() -> None:
    async with Isolation(timeout=5.0) as isolation:
        assert await isolation.verdict(source("a", hello(1)), None) is None
        first = isolation.helper.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # between candidates
        await until(lambda: isolation.helper.pid is None)
        assert await isolation.verdict(source("a", hello(2)), None) is None
        second = isolation.helper.pid
        assert second not in (None, first)
        assert isolation.helper.started == 2

        slow = asyncio.ensure_future(
            isolation.verdict(source("slow", "import time\ntime.sleep(0.5)\n" + hello(3)), None)
        )
        await asyncio.sleep(0.2)
        os.kill(second, signal.SIGKILL)  # while a candidate is being checked: it is sent to the next helper
        assert await slow is None
        assert isolation.helper.started == 3
    assert isolation.helper.pid is None


async def test_the_helper_stops_with_its_owner_and_leaves_no_process() -> None:
    async with Isolation() as isolation:
        assert await isolation.verdict(source("a", hello(1)), None) is None
        pid = isolation.helper.pid
        assert pid is not None
        assert _alive(pid)
    assert not _alive(pid)


async def test_the_helper_and_its_candidates_die_with_a_sigkilled_server(tmp_path: Path, components: Path) -> None:
    (components / "slow.py").write_text("import time\ntime.sleep(60)\n")  # a candidate still running
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    env.update(
        WORKFLOW_COMPONENTS_DIR=str(components),
        WORKFLOW_DATA_DIR=str(tmp_path / "data"),
        WORKFLOW_LOG_FORMAT="json",
        WORKFLOW_IMPORT_TIMEOUT="60s",
    )
    port, admin = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        *server_command(config, f"127.0.0.1:{port}", f"127.0.0.1:{admin}"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        helper = await until(lambda: _children(proc.pid), timeout=20)
        candidates = await until(lambda: _children(helper[0]), timeout=20)  # the sleeping one and the spare
        proc.kill()  # SIGKILL: the server gets no chance to stop its helper
        await proc.wait()
        await until(lambda: not any(_alive(pid) for pid in helper + candidates), timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_isolation_can_be_turned_off(start, components) -> None:
    server = await start(isolate_components=False)
    assert (await create(server, "hello", hello(1)))[0] == 201
    assert manager(server).isolation.helper.pid is None  # no helper was started
    assert await put(server, "hello", "raise KeyboardInterrupt()\n") == (
        422,
        expected(components / "hello.py", 1, "failed to import: KeyboardInterrupt"),
    )
    assert await answer(server, "/hello") == (200, 1)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, waiting to be reaped, no longer does)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(parent: int) -> list[int]:
    """The pids whose parent is `parent`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rpartition(")")[2].split()[1]) == parent:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


async def test_a_candidate_runs_confined() -> None:
    probe = (
        "import os, resource\n"
        "fds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"  # the listing's own fd is the last
        "stdio = [os.readlink(f'/proc/self/fd/{fd}') for fd in (0, 1, 2)]\n"
        "raise RuntimeError(fds, stdio, os.getpgid(0) == os.getpid(), resource.getrlimit(resource.RLIMIT_CPU),\n"
        "                   resource.getrlimit(resource.RLIMIT_CORE))\n"
    )
    async with Isolation(timeout=5.0) as isolation:
        for _ in range(2):  # a spare forked ahead, then (no spare yet) a candidate forked for its request
            refusal = await isolation.verdict(source("probe", probe), None)
            assert refusal is not None
            assert refusal.message == (
                "/nowhere/probe.py:4: failed to import: RuntimeError: ([0, 1, 2, 3, 4], "
                "['/dev/null', '/dev/null', '/dev/null'], True, (7, 8), (0, 0))"
            )
