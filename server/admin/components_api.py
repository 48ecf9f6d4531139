"""Admin API for components: list, show, create, replace and delete, each applied like a file save."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from ..auth import IDENTITY
from ..components import COMPONENT_ID, Component, ComponentError, Source
from ..errors import BadRequest, NotFound, PayloadTooLarge, WorkflowError
from ..keys import ENGINE, RELOADER
from ..middleware import json_response
from .policy import check_imports


class Conflict(WorkflowError):
    """The component already exists (POST) and must be replaced with PUT."""

    status = 409


# Held by every write from its existence check to its store record: two calls for one id must not interleave
# (two POSTs both creating, or two PUTs renaming their files in the other order than they went into service).
WRITES: web.AppKey[asyncio.Lock] = web.AppKey("component_writes", asyncio.Lock)


async def list_components(request: web.Request) -> web.Response:
    """Every component in service or in error, with its status."""
    manager = request.app[RELOADER]
    ids = sorted(set(manager.components) | set(manager.failures))
    return json_response({"components": [_describe(request, cid) for cid in ids]})


async def get_component(request: web.Request) -> web.Response:
    """One component, with its source."""
    cid = _id(request.match_info["id"])
    manager = request.app[RELOADER]
    if cid not in manager.components and cid not in manager.failures:
        raise NotFound(f"no component {cid!r}")
    body = _describe(request, cid)
    path = manager.components[cid].path if cid in manager.components else manager.failures[cid].path
    try:
        body["source"] = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    except OSError:
        body["source"] = None
    return json_response(body)


async def create_component(request: web.Request) -> web.Response:
    """`POST {id, source}`: load a new component; 201, or 422 with the error and nothing changed."""
    body = await _json(request)
    cid = _id(body.get("id"))
    text = _source(request, body)
    manager = request.app[RELOADER]
    async with request.app[WRITES]:
        # A file in error exists too: creating over it would silently overwrite someone's file.
        if cid in manager.components or cid in manager.failures:
            raise Conflict(f"component {cid!r} exists; replace it with PUT", id=cid)
        try:
            await _install(request, cid, text, action="create")
        except ComponentError:
            # Refused: no file and nothing in service, so no component in error to list either.
            manager.failures.pop(cid, None)
            raise
        return json_response(_describe(request, cid), 201)


async def replace_component(request: web.Request) -> web.Response:
    """`PUT {source}`: load a new version; 200, or 422 with the error and the old version still serving."""
    cid = _id(request.match_info["id"])
    text = _source(request, await _json(request))
    manager = request.app[RELOADER]
    async with request.app[WRITES]:
        if cid not in manager.components and cid not in manager.failures:
            raise NotFound(f"no component {cid!r}; create it with POST")
        await _install(request, cid, text, action="update")
        return json_response(_describe(request, cid))


async def delete_component(request: web.Request) -> web.Response:
    """`DELETE`: take the component out of service and remove its file; 204."""
    cid = _id(request.match_info["id"])
    manager = request.app[RELOADER]
    path = _path(request, cid)
    async with request.app[WRITES]:
        # Checked first: `remove` forgets the failure, and a file in error must be deletable too.
        known = cid in manager.components or cid in manager.failures
        await manager.remove(cid)
        if not known:
            raise NotFound(f"no component {cid!r}")
        await asyncio.to_thread(_unlink, path)
        await _record(request, "delete", cid, None)
    return web.Response(status=204)


async def _install(request: web.Request, cid: str, text: str, *, action: str) -> Component:
    """Write a hidden temp file, load it as the component's next version, then rename it into place.

    The watcher ignores hidden files and, after the rename, sees content it already serves, so the
    API and the watcher never fight; a refused version leaves neither the service nor the file changed.
    """
    settings = request.app[ENGINE].settings
    path = _path(request, cid)
    if settings.component_imports is not None:
        check_imports(text, str(path), settings.component_imports)
    temp = await asyncio.to_thread(_write_temp, path, text)
    try:
        component = await request.app[RELOADER].apply(Source.from_text(cid, str(path), text))
    except BaseException:
        await asyncio.to_thread(_unlink, temp)
        raise
    await asyncio.to_thread(os.replace, temp, path)
    await _record(request, action, cid, text)
    return component


async def _record(request: web.Request, action: str, cid: str, text: str | None) -> None:
    """Persist the change and audit it, when a store is configured."""
    store = request.app[ENGINE].store
    if store is None:
        return
    who = request[IDENTITY].subject if IDENTITY in request else "?"
    if text is None:
        await store.delete_component(cid, who)
    else:
        component = request.app[RELOADER].components[cid]
        await store.put_component(cid, text, component.sha256, who)
    await store.audit(who, f"component.{action}", cid, request.remote or "")


def _describe(request: web.Request, cid: str) -> dict[str, Any]:
    manager = request.app[RELOADER]
    component, failure = manager.components.get(cid), manager.failures.get(cid)
    body: dict[str, Any] = {"id": cid, "status": "serving" if component else "error"}
    if component is not None:
        body.update(sha256=component.sha256, version=component.version, loaded_at=component.loaded_at,
                    path=component.path, step_types=sorted(component.steps),
                    endpoints=[f"{e.method} {e.path}" for e in component.endpoints],
                    in_flight=request.app[ENGINE].in_flight(component.steps.values()))
    body["last_error"] = None if failure is None else {
        "error": failure.error, "line": failure.line, "sha256": failure.sha256, "at": failure.at}
    return body


def _id(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise BadRequest("a component id is required", field="id")
    # Checked as it is, not as a file name: a path ("../x") must not pass as its stem, and fullmatch
    # because the pattern's `$` would accept a trailing newline.
    cid = raw.lower()
    if not COMPONENT_ID.fullmatch(cid):
        raise BadRequest(f"component ids are 1-64 characters of a-z, 0-9 and _, not {raw!r}", field="id")
    return cid


def _source(request: web.Request, body: dict[str, Any]) -> str:
    text = body.get("source")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("'source' must be the component's Python source text", field="source")
    limit = request.app[ENGINE].settings.max_source_bytes
    if len(text.encode()) > limit:
        raise PayloadTooLarge(f"source is larger than the limit of {limit} bytes", limit=limit)
    return text


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _path(request: web.Request, cid: str) -> Path:
    return request.app[ENGINE].settings.components_dir / f"{cid}.py"


def _write_temp(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(name)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
