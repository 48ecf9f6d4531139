"""Admin API for components: list, show, create, replace and delete, each applied like a file save."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import (
    BadRequest,
    ComponentError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    StoreUnavailable,
    clip,
)
from ..http.bodies import body_kind, json_object
from ..http.middleware import json_response
from ..keys import COMPONENT_WRITES, ENGINE, IDENTITY, RELOADER, REPLICATOR, SETTINGS
from ..reload.loader import COMPONENT_ID, ID_RULE, Component, Source, component_id
from .policy import check_imports


async def list_components(request: web.Request) -> web.Response:
    """Every component in service or in error, with its status and what each replica serves."""
    manager = request.app[RELOADER]
    replicas = await _replicas(request)
    ids = sorted(set(manager.components) | set(manager.failures))
    return json_response({"components": [_describe(request, cid, replicas) for cid in ids]})


async def get_component(request: web.Request) -> web.Response:
    """One component, with its source."""
    cid = _id(request.match_info["id"])
    manager = request.app[RELOADER]
    if cid not in manager.components and cid not in manager.failures:
        raise NotFound(f"no component {cid!r}")
    body = _describe(request, cid, await _replicas(request))
    body["used_by"] = used_by(request, cid)
    if cid in manager.components:
        body["source"] = manager.components[cid].text
    else:  # in error: what is on disk is what failed
        try:
            body["source"] = await asyncio.to_thread(Path(manager.failures[cid].path).read_text, encoding="utf-8")
        except OSError:
            body["source"] = None
    return json_response(body, headers={"ETag": f'"{body["sha256"]}"'} if body.get("sha256") else None)


async def create_component(request: web.Request) -> web.Response:
    """`POST {id, source}`: load a new component; 201, or 422 with the error and nothing changed."""
    body = await _json(request)
    cid = _id(body.get("id"))
    text = _source(request, body)
    manager = request.app[RELOADER]
    await _precheck(request, cid, text)  # isolation: before the write lock
    async with request.app[COMPONENT_WRITES]:
        # A file in error exists too: creating over it would silently overwrite someone's file.
        if cid in manager.components or cid in manager.failures:
            raise Conflict(f"component {cid!r} exists; replace it with PUT", id=cid)
        try:
            await _install(request, cid, text, action="create")
        except ComponentError:
            # Refused: no file and nothing in service, so no component in error to list either.
            manager.failures.pop(cid, None)
            raise
        return json_response(_describe(request, cid, await _replicas(request)), 201)


async def replace_component(request: web.Request) -> web.Response:
    """`PUT {source}`: load a new version; 200, or 422 with the error and the old version still serving."""
    cid = _id(request.match_info["id"])
    text = _source(request, await _json(request))
    manager = request.app[RELOADER]
    await _precheck(request, cid, text)  # isolation: before the write lock
    async with request.app[COMPONENT_WRITES]:
        if cid not in manager.components and cid not in manager.failures:
            raise NotFound(f"no component {cid!r}; create it with POST")
        _check_precondition(request, cid)
        await _install(request, cid, text, action="update")  # refused: shown as the component's last error
        return json_response(_describe(request, cid, await _replicas(request)))


async def validate_component(request: web.Request) -> web.Response:
    """`POST .../{id}/validate {source}`: the checks of a save, changing nothing; `valid`, else the error and line."""
    cid = _id(request.match_info["id"])
    text = _source(request, await _json(request))
    settings, manager = request.app[ENGINE].settings, request.app[RELOADER]
    source = Source.from_text(cid, str(settings.components_dir / f"{cid}.py"), text)
    try:
        if settings.component_imports is not None:
            check_imports(text, f"{cid}.py", settings.component_imports)
        component = await manager.dry_run(source)
    except ComponentError as exc:
        return json_response({"valid": False, "error": exc.message, "line": exc.details.get("line")})
    endpoints = [f"{e.method} {e.path}" for e in component.endpoints]
    return json_response(
        {"valid": True, "sha256": source.sha256, "step_types": sorted(component.steps), "endpoints": endpoints}
    )


async def delete_component(request: web.Request) -> web.Response:
    """`DELETE`: take the component out of service, everywhere, and remove its file; 204."""
    cid = _id(request.match_info["id"])
    manager = request.app[RELOADER]
    async with request.app[COMPONENT_WRITES]:
        if cid not in manager.components and cid not in manager.failures:
            raise NotFound(f"no component {cid!r}")
        await request.app[REPLICATOR].delete(cid, who=_who(request), client=request.remote or "")
    return web.Response(status=204)


def _check_precondition(request: web.Request, cid: str) -> None:
    """`If-Match: "<sha256>"`: 412 unless that is the version serving now (someone else saved in between)."""
    wanted = request.headers.get("If-Match")
    if wanted is None or wanted.strip() == "*":
        return
    current = request.app[RELOADER].components.get(cid)
    serving = current.sha256 if current is not None else None
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in wanted.split(",")}
    if serving not in tags:
        raise PreconditionFailed(
            f"component {cid!r} changed since you loaded it: it serves {(serving or 'nothing')[:12]} now; "
            "reload it and apply your edit again",
            id=cid,
            sha256=serving,
        )


def used_by(request: web.Request, cid: str) -> list[str]:
    """The pipelines using a step type of component `cid`: they answer 503 once it is gone."""
    component = request.app[RELOADER].components.get(cid)
    if component is None:
        return []
    types = set(component.steps)
    pipelines = request.app[ENGINE].config.pipelines.values()
    return sorted(p.name for p in pipelines if any(s.type in types for s in (*p.steps, *p.compensation)))


async def _install(request: web.Request, cid: str, text: str, *, action: str) -> Component:
    """Check the import policy, then store, write and serve the version through the replicator."""
    settings = request.app[ENGINE].settings
    if settings.component_imports is not None:
        check_imports(text, f"{cid}.py", settings.component_imports)
    return await request.app[REPLICATOR].put(cid, text, who=_who(request), client=request.remote or "", action=action)


async def _precheck(request: web.Request, cid: str, text: str) -> None:
    """Check the version in its candidate process before the write lock: a hanging one holds up no other write.

    The verdict waits for the install, under the lock. A source the import policy refuses is never run.
    """
    engine, manager = request.app[ENGINE], request.app[RELOADER]
    if engine.settings.component_imports is not None:
        try:
            check_imports(text, f"{cid}.py", engine.settings.component_imports)
        except ComponentError:  # refused under the lock, in its turn
            return
    source = Source.from_text(cid, str(engine.settings.components_dir / f"{cid}.py"), text)
    await manager.isolation.precheck(source, engine.config, manager.components)


def _who(request: web.Request) -> str:
    return request[IDENTITY].subject if IDENTITY in request else "?"


async def _replicas(request: web.Request) -> dict[str, list[dict[str, Any]]]:
    """What every replica that reported recently serves, per component id (empty when the store is down)."""
    replicator = request.app[REPLICATOR]
    try:
        rows = await replicator.replicas()
    except StoreUnavailable:
        return {}
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row.component, []).append(
            {
                "replica": row.replica,
                "version": row.version,
                "sha256": row.sha256,
                "status": row.status,
                "error": row.error,
                "reported_at": row.reported_at.isoformat() if row.reported_at else None,
            }
        )
    return found


def _describe(request: web.Request, cid: str, replicas: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    manager = request.app[RELOADER]
    component, failure = manager.components.get(cid), manager.failures.get(cid)
    body: dict[str, Any] = {"id": cid, "status": "serving" if component else "error"}
    if component is not None:
        body.update(
            sha256=component.sha256,
            version=component.version,
            loaded_at=component.loaded_at,
            path=component.path,
            step_types=sorted(component.steps),
            endpoints=[f"{e.method} {e.path}" for e in component.endpoints],
            in_flight=request.app[ENGINE].in_flight(component.steps.values()),
        )
    body["last_error"] = (
        None
        if failure is None
        else {"error": failure.error, "line": failure.line, "sha256": failure.sha256, "at": failure.at}
    )
    body["replicas"] = replicas.get(cid, [])
    return body


def checked_id(raw: Any) -> str:
    """A valid component id from the path or body; BadRequest naming the rule otherwise."""
    return _id(raw)


def _id(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise BadRequest("a component id is required", field="id")
    # Checked as it is, not as a file name: a path ("../x") must not pass as its stem, and fullmatch
    # because the pattern's `$` would accept a trailing newline.
    cid = component_id(raw)
    if cid is None:
        raise BadRequest(f"{ID_RULE}, not {clip(raw)!r}", field="id", rule=COMPONENT_ID.pattern)
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
    body_kind(request, forms=False)  # the main listener's rule: JSON (or no type), else 415
    return json_object(await request.read(), request.app[SETTINGS].max_json_depth)
