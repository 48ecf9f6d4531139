"""Who may call what: roles (admin writes, viewer reads) and the page's session cookie with its CSRF token.

A request is identified by its bearer token, or else by the session cookie that `POST /api/session` gives in
exchange for a token. The cookie is HttpOnly and SameSite=Strict, lives at most SESSION_TTL (and never past the
token's own expiry), and is an HMAC-signed record, so any replica sharing JWT_SECRET accepts it. A write made
with the cookie must also carry the session's CSRF token in `X-CSRF-Token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..errors import BadRequest, Forbidden, Unauthorized
from ..http.bodies import body_kind, json_object
from ..http.middleware import json_response
from ..keys import IDENTITY, SETTINGS
from .auth import ADMIN_ROLE, Authenticator, Handler, Identity, _roles

VIEWER_ROLE = "viewer"
COOKIE = "workflow_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = 3600.0


class Sessions:
    """Signs and checks session cookies; the key derives from JWT_SECRET, else it is this process's own."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        secret = authenticator.secret
        self._key = hashlib.sha256(b"workflow-session\0" + secret.encode()).digest() if secret else os.urandom(32)

    async def exchange(self, token: str) -> tuple[dict[str, Any], str]:
        """The session's description and its cookie value, for a token that verifies and carries a role."""
        claims = await self.authenticator.verify(token)
        roles = sorted(_roles(claims) & {ADMIN_ROLE, VIEWER_ROLE})
        subject = str(claims.get("sub") or "?")
        if not roles:
            raise Forbidden(f"{subject!r} has neither the {ADMIN_ROLE!r} nor the {VIEWER_ROLE!r} role")
        expires = min(float(claims["exp"]), time.time() + SESSION_TTL)
        record = {"sub": subject, "roles": roles, "exp": expires, "csrf": secrets.token_urlsafe(24)}
        body = _b64(json.dumps(record, separators=(",", ":")).encode())
        return record, f"{body}.{_b64(self._sign(body))}"

    def read(self, value: str) -> dict[str, Any]:
        """The record of a cookie value this server signed and that has not expired; Unauthorized otherwise."""
        body, _, signature = value.partition(".")
        try:
            valid = hmac.compare_digest(_unb64(signature), self._sign(body))
            record = json.loads(_unb64(body)) if valid else None
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise Unauthorized("the session cookie is not valid; sign in again")
        if float(record.get("exp", 0)) <= time.time():
            raise Unauthorized("the session has expired; sign in again")
        return record

    def _sign(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()


async def identify(request: web.Request, sessions: Sessions, *, write: bool) -> Identity:
    """The caller: the bearer token when one is sent, else the session cookie (whose writes need the CSRF token)."""
    if "Authorization" in request.headers or COOKIE not in request.cookies:
        return await sessions.authenticator.identify(request)
    record = sessions.read(request.cookies[COOKIE])
    sent, expected = request.headers.get(CSRF_HEADER, "").encode(), str(record.get("csrf", "")).encode()
    if write and not hmac.compare_digest(sent, expected):  # bytes: compare_digest refuses non-ASCII text
        raise Forbidden(f"a write with the session cookie needs its CSRF token in {CSRF_HEADER}")
    return Identity(str(record.get("sub")), frozenset(record.get("roles", ())), float(record.get("exp", 0)) or None)


def require(sessions: Sessions, *, write: bool) -> Callable[[Handler], Handler]:
    """Wrap a handler: reads need the viewer or admin role, writes the admin role (CONTRACT §6)."""
    wanted = {ADMIN_ROLE} if write else {ADMIN_ROLE, VIEWER_ROLE}

    def decorate(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            identity = await identify(request, sessions, write=write)
            if not identity.roles & wanted:
                needed = " or ".join(repr(r) for r in sorted(wanted))
                raise Forbidden(f"{identity.subject!r} does not have the {needed} role")
            request[IDENTITY] = identity
            return await handler(request)

        guarded.__name__ = handler.__name__
        guarded.__doc__ = handler.__doc__
        return guarded

    return decorate


def session_routes(app: web.Application, sessions: Sessions) -> None:
    """`POST /api/session {token}` signs in with a cookie, `GET` describes it, `DELETE` signs out."""

    async def create(request: web.Request) -> web.Response:
        body_kind(request, forms=False)  # the admin API's rule: JSON (or no type), else 415
        body = json_object(await request.read(), request.app[SETTINGS].max_json_depth)
        token = body.get("token")
        if not isinstance(token, str) or not token.strip():
            raise BadRequest("send {'token': '<JWT>'} to sign in", field="token")
        record, value = await sessions.exchange(token.strip())
        response = json_response(_described(record, csrf=True))
        response.set_cookie(
            COOKIE,
            value,
            max_age=max(1, int(record["exp"] - time.time())),
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        return response

    async def show(request: web.Request) -> web.Response:
        if "Authorization" not in request.headers and COOKIE in request.cookies:
            return json_response(_described(sessions.read(request.cookies[COOKIE]), csrf=True))
        identity = await sessions.authenticator.identify(request)
        body = {"subject": identity.subject, "roles": sorted(identity.roles), "expires_at": None, "csrf": None}
        return json_response(body)

    async def delete(request: web.Request) -> web.Response:
        response = web.Response(status=204)
        response.del_cookie(COOKIE, path="/")
        return response

    app.router.add_post("/api/session", create)
    app.router.add_get("/api/session", show)
    app.router.add_delete("/api/session", delete)


def _described(record: dict[str, Any], *, csrf: bool) -> dict[str, Any]:
    return {
        "subject": record["sub"],
        "roles": list(record["roles"]),
        "expires_at": record["exp"],
        "csrf": record["csrf"] if csrf else None,
    }


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError("not base64") from None
