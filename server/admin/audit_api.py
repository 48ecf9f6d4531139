"""Admin API for the audit log: who changed what, when and from where, newest first, paged by a cursor."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import BadRequest
from ..http.middleware import json_response
from ..keys import STORE
from .queries import limit_of, refuse_nul, whole_number

# The largest audit entry id the store holds (a 64-bit integer): a cursor past it is none this server handed out.
LARGEST_ID = 2**63 - 1


async def list_audit(request: web.Request) -> web.Response:
    """`GET /api/audit?component=&actor=&limit=&cursor=`: entries newest first; `next` links the following page."""
    query = request.query
    refuse_nul(query)
    cursor = query.get("cursor") or None
    before = whole_number(cursor) if cursor is not None else None
    if cursor is not None and (before is None or before > LARGEST_ID):
        raise BadRequest("'cursor' is not a cursor this server handed out", field="cursor")
    size = limit_of(query)
    rows = await request.app[STORE].list_audit(
        limit=size + 1,
        target=query.get("component") or None,
        who=query.get("actor") or None,
        before=before,
    )
    entries: list[dict[str, Any]] = [
        {
            "id": row.id,
            "at": row.at.isoformat(),
            "actor": row.who,
            "action": row.action,
            "target": row.target,
            "client_address": row.client_address,
            "detail": row.detail,
        }
        for row in rows[:size]
    ]
    following = None
    if len(rows) > size:
        following = str(request.rel_url.update_query(cursor=str(rows[size - 1].id)))
    return json_response({"entries": entries, "next": following})
