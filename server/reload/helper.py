"""The server's end of the isolation helper (`server.reload.forkserver`): start it, send candidates, match answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .candidate import HEADER, frame

log = logging.getLogger("workflow.isolation")
# The helper must import this very `server` package: not `-m`, which would put the working directory (where
# another `server` package may live) first on its path.
BOOTSTRAP = (
    f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); "
    "from server.reload.forkserver import main; sys.exit(main())"
)

START_TIMEOUT = 60.0  # the helper imports the server and the preloaded modules before it answers
ANSWER_MARGIN = 5.0  # the helper enforces each candidate's timeout; this only catches a helper that stopped


class HelperGone(Exception):
    """The helper process died, stopped answering or could not start (not a verdict on the component)."""


@dataclass(eq=False)
class _Running:
    """One helper process, the requests it has not answered yet, and the task reading its answers."""

    process: asyncio.subprocess.Process
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    alive: bool = True


class CandidateHelper:
    """The helper process and its pipe protocol; a helper that dies is replaced by the next request."""

    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        self.preload = preload
        self.started = 0  # helpers started so far (a replacement counts too)
        self._current: _Running | None = None
        self._starting: asyncio.Task[_Running] | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self._next_id = 0
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running helper's pid, if one runs."""
        current = self._current
        return current.process.pid if current is not None and current.alive else None

    async def request(self, payload: dict[str, Any], budget: float) -> dict[str, Any]:
        """Send one candidate and return the helper's answer; if the helper dies meanwhile, retry once on a new one."""
        for _attempt in range(2):
            running = await self._running()
            self._next_id += 1
            request_id = self._next_id
            answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            running.pending[request_id] = answer
            try:
                assert running.process.stdin is not None
                running.process.stdin.write(frame(pickle.dumps({**payload, "id": request_id})))
                await running.process.stdin.drain()
                return await asyncio.wait_for(answer, budget + ANSWER_MARGIN)
            except (HelperGone, ConnectionError):  # it exited: its reader reaps it
                self._discard(running, "exited")
            except TimeoutError:
                self._discard(running, "stopped answering", kill=True)
                raise HelperGone("the isolation helper stopped answering") from None
            finally:
                running.pending.pop(request_id, None)
        raise HelperGone("the isolation helper died twice while checking this version")

    async def _running(self) -> _Running:
        if self._closed:
            raise HelperGone("the server is stopping")
        if self._current is not None and self._current.alive:
            return self._current
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self._start())
            # Its failure reaches every caller; retrieved here too, in case all of them gave up waiting.
            self._starting.add_done_callback(lambda task: task.cancelled() or task.exception())
        # Shielded: one caller giving up must not stop the start the others wait for.
        return await asyncio.shield(self._starting)

    async def _start(self) -> _Running:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                BOOTSTRAP,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )  # its own session: a Ctrl-C on the terminal is the server's to handle
        except OSError as exc:
            raise HelperGone(f"the isolation helper did not start: {exc}") from None
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write(frame(pickle.dumps({"sys_path": list(sys.path), "preload": list(self.preload)})))
            await process.stdin.drain()
            hello = await asyncio.wait_for(_read_answer(process.stdout), START_TIMEOUT)
        except BaseException as exc:
            if not isinstance(exc, (HelperGone, ConnectionError)):  # it still runs (else: it exited by itself)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await process.wait()
            if isinstance(exc, (HelperGone, ConnectionError, TimeoutError)):
                raise HelperGone(f"the isolation helper did not start (exit code {process.returncode})") from None
            raise
        for problem in hello.get("preload_failed", []):
            log.warning("isolation helper: cannot preload %s", problem)
        running = _Running(process)
        running.reader = asyncio.create_task(self._read(running), name=f"isolation-helper-{process.pid}")
        self._readers.add(running.reader)
        running.reader.add_done_callback(self._readers.discard)
        self._current = running
        self.started += 1
        log.debug("isolation helper %d ready in %.3fs", process.pid, hello.get("seconds", 0))
        return running

    async def _read(self, running: _Running) -> None:
        """Hand each answer to its request until the helper's stdout closes, then reap the helper."""
        assert running.process.stdout is not None
        try:
            while True:
                answer = await _read_answer(running.process.stdout)
                request_id = answer.get("id")
                future = running.pending.pop(request_id, None) if isinstance(request_id, int) else None
                if future is not None and not future.done():
                    future.set_result(answer)
        except (HelperGone, ConnectionError):
            pass
        finally:
            self._discard(running, "exited")
            try:
                code = await asyncio.wait_for(asyncio.shield(running.process.wait()), ANSWER_MARGIN)
            except TimeoutError:  # it closed its stdout yet runs on: nothing else would stop it
                self._discard(running, "exited", kill=True)
                code = await running.process.wait()
            if not self._closed:
                log.warning(
                    "isolation helper %d exited (code %s); the next candidate starts a new one",
                    running.process.pid,
                    code,
                )

    def _discard(self, running: _Running, why: str, *, kill: bool = False) -> None:
        """Stop using `running` and fail what it still owes; `kill` it (its children die with it) if it still runs.

        Only a helper known to run is killed: signalling one that exited would reap it behind the back of
        asyncio's child watcher, which then logs "Unknown child process".
        """
        if self._current is running:
            self._current = None
        if kill and running.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                running.process.kill()
        if not running.alive:
            return
        running.alive = False
        for future in running.pending.values():
            if not future.done():
                future.set_exception(HelperGone(f"the isolation helper {why}"))
        running.pending.clear()

    async def aclose(self) -> None:
        """Stop the helper: end of file on its stdin makes it kill its children and exit."""
        self._closed = True
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        current, self._current = self._current, None
        if current is not None and current.alive:
            assert current.process.stdin is not None
            current.process.stdin.close()
            try:
                await asyncio.wait_for(asyncio.shield(current.process.wait()), 2.0)
            except TimeoutError:
                self._discard(current, "did not stop", kill=True)
            self._discard(current, "stopped")
        if self._readers:
            await asyncio.gather(*self._readers, return_exceptions=True)


async def _read_answer(stream: asyncio.StreamReader) -> dict[str, Any]:
    try:
        (size,) = HEADER.unpack(await stream.readexactly(HEADER.size))
        answer = json.loads(await stream.readexactly(size))
    except asyncio.IncompleteReadError:
        raise HelperGone("the isolation helper exited") from None
    if not isinstance(answer, dict):
        raise HelperGone("the isolation helper answered nonsense")
    return answer
