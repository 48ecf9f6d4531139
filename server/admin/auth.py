"""JWT bearer authentication for the admin API: HS256 with JWT_SECRET, or RS256/ES256 from a JWKS URL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from ..errors import AuthUnavailable, Forbidden, Unauthorized
from ..keys import IDENTITY
from ..settings import Settings

log = logging.getLogger("workflow.auth")

MIN_SECRET_BYTES = 32
ADMIN_ROLE = "admin"
ASYMMETRIC = ["RS256", "ES256"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made an admin call, from the verified token."""

    subject: str
    roles: frozenset[str]


class Authenticator:
    """Verifies bearer tokens; the algorithm is pinned by the key type, never taken from the token."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.jwt_secret
        self.secret = secret if secret and len(secret.encode()) >= MIN_SECRET_BYTES else None
        self.jwks = jwt.PyJWKClient(settings.jwt_jwks_url, lifespan=300) if settings.jwt_jwks_url else None
        self.issuer, self.audience = settings.jwt_issuer, settings.jwt_audience
        self.disabled_reason = None
        if self.secret is None and self.jwks is None:
            self.disabled_reason = (
                f"JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes"
                if secret
                else "neither JWT_SECRET nor JWT_JWKS_URL is set"
            )
            log.warning("admin API disabled: %s; every admin call answers 503", self.disabled_reason)

    async def identify(self, request: web.Request) -> Identity:
        """The verified identity behind the request's bearer token."""
        if self.disabled_reason:
            raise AuthUnavailable(f"the admin API is disabled: {self.disabled_reason}")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a bearer token is required", error="invalid_request")
        claims = await self.verify(token.strip())
        return Identity(str(claims.get("sub") or "?"), _roles(claims))

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raise Unauthorized when it does not verify."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") == "HS256" and self.secret:
                key, algorithms = self.secret, ["HS256"]
            elif header.get("alg") in ASYMMETRIC and self.jwks:
                # PyJWKClient fetches with urllib: keep the blocking call off the event loop.
                key = (await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)).key
                algorithms = ASYMMETRIC
            else:
                raise Unauthorized(f"tokens signed with {header.get('alg')!r} are not accepted")
            return jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.PyJWKClientError as exc:
            raise Unauthorized(f"no key to verify the token: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None


def require_admin(authenticator: Authenticator) -> Callable[[Handler], Handler]:
    """Wrap a handler so it runs only for a verified token carrying the admin role."""

    def decorate(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            identity = await authenticator.identify(request)
            if ADMIN_ROLE not in identity.roles:
                raise Forbidden(f"{identity.subject!r} does not have the {ADMIN_ROLE!r} role")
            request[IDENTITY] = identity
            return await handler(request)

        guarded.__name__ = handler.__name__
        guarded.__doc__ = handler.__doc__
        return guarded

    return decorate


def _roles(claims: dict[str, Any]) -> frozenset[str]:
    """Roles from a `role` string and/or a `roles` list."""
    roles = set()
    if isinstance(claims.get("role"), str):
        roles.add(claims["role"])
    if isinstance(claims.get("roles"), list):
        roles.update(r for r in claims["roles"] if isinstance(r, str))
    return frozenset(roles)
