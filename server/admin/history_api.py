"""Admin API for a component's stored versions: the history (who, when, from where), one version, and diffs."""

from __future__ import annotations

import difflib
from typing import Any

from aiohttp import web

from ..errors import BadRequest, NotFound, clip
from ..http.middleware import json_response
from ..keys import STORE
from ..store.base import HistoryRow
from .components_api import checked_id
from .queries import whole_number

# The largest version the store can hold (PostgreSQL's INTEGER): a larger one is not stored, and is not sent to it.
LARGEST_VERSION = 2**31 - 1


async def list_versions(request: web.Request) -> web.Response:
    """`GET .../{id}/versions`: the stored versions, newest first (at most HISTORY_KEPT per component)."""
    cid = checked_id(request.match_info["id"])
    rows = await request.app[STORE].component_history(cid)
    if not rows:
        raise NotFound(f"no stored version of component {cid!r}")
    return json_response({"id": cid, "versions": [_version(row) for row in rows]})


async def get_version(request: web.Request) -> web.Response:
    """`GET .../{id}/versions/{version}`: one stored version with its source."""
    cid = checked_id(request.match_info["id"])
    row = await _stored(request, cid, request.match_info["version"], "version")
    return json_response({**_version(row), "source": row.source})


async def diff_versions(request: web.Request) -> web.Response:
    """`GET .../{id}/diff?from=&to=`: a unified diff between two stored versions (a deletion is empty text)."""
    cid = checked_id(request.match_info["id"])
    old = await _stored(request, cid, request.query.get("from", ""), "from")
    new = await _stored(request, cid, request.query.get("to", ""), "to")
    lines = list(
        difflib.unified_diff(
            (old.source or "").splitlines(keepends=True),
            (new.source or "").splitlines(keepends=True),
            fromfile=f"{cid}.py v{old.version}",
            tofile=f"{cid}.py v{new.version}",
        )
    )
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    return json_response(
        {"id": cid, "from": old.version, "to": new.version, "added": added, "removed": removed, "diff": "".join(lines)}
    )


async def _stored(request: web.Request, cid: str, raw: str, field: str) -> HistoryRow:
    number = whole_number(raw)
    if number is None:
        raise BadRequest(f"{field} must be a version number", field=field)
    row = await request.app[STORE].component_version(cid, number) if number <= LARGEST_VERSION else None
    if row is None:
        raise NotFound(f"version {clip(raw)} of component {cid!r} is not stored (or no longer kept)")
    if row.deleted:
        return HistoryRow(row.id, row.version, row.sha256, row.at, row.who, row.origin, True, "")
    return row


def _version(row: HistoryRow) -> dict[str, Any]:
    return {
        "version": row.version,
        "sha256": row.sha256,
        "at": row.at.isoformat(),
        "who": row.who,
        "origin": row.origin,
        "deleted": row.deleted,
    }
