"""JWT bearer authentication for the admin API: HS256 with JWT_SECRET, or RS256/ES256 from a JWKS URL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from jwt.exceptions import InvalidSubjectError
from jwt.types import Options

from ..errors import AuthUnavailable, Unauthorized
from ..settings import Settings

log = logging.getLogger("workflow.auth")

MIN_SECRET_BYTES = 32
ADMIN_ROLE = "admin"
MAX_SUBJECT = 128
ASYMMETRIC = ["RS256", "ES256"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made an admin call, from the verified token."""

    subject: str
    roles: frozenset[str]
    expires: float | None = None  # the token's (or the session's) `exp`: an open event stream ends then


class Authenticator:
    """Verifies bearer tokens; the algorithm is pinned by the key type, never taken from the token."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.jwt_secret
        self.secret = secret if secret and len(secret.encode()) >= MIN_SECRET_BYTES else None
        self.jwks = jwt.PyJWKClient(settings.jwt_jwks_url, lifespan=300) if settings.jwt_jwks_url else None
        self.issuer, self.audience = settings.jwt_issuer, settings.jwt_audience
        self.max_lifetime = settings.jwt_max_lifetime
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
        return Identity(claims["sub"], _roles(claims), float(claims["exp"]))

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raise Unauthorized, in words of our own, when it does not verify."""
        try:
            key, algorithms = await self._key(token)
            # The signature first, then the claims' types (PyJWT accepts "exp": "123" and true), then their values.
            claims = jwt.decode(token, key, algorithms=algorithms, options=_SIGNATURE_ONLY)
            _check_claims(claims, self.max_lifetime)
            return jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(_reason(exc)) from None

    async def _key(self, token: str) -> tuple[Any, list[str]]:
        """The key and the one algorithm it verifies, pinned by the configured key, never by the token alone."""
        alg = jwt.get_unverified_header(token).get("alg")
        if alg == "HS256" and self.secret:
            return self.secret, ["HS256"]
        if alg in ASYMMETRIC and self.jwks:
            # PyJWKClient fetches with urllib: keep the blocking call off the event loop.
            signing = await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)
            if signing.algorithm_name != alg:  # an ES256 token naming an RSA key, or the reverse
                raise Unauthorized(
                    f"the token is signed with {alg} but its key ('kid') is a {signing.algorithm_name} key"
                )
            return signing.key, [alg]
        raise Unauthorized(f"tokens signed with {str(alg)[:16]!r} are not accepted")


# The first decode checks the signature only; the second, once the claims' types are known, their values.
_SIGNATURE_ONLY: Options = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_iss": False,
    "verify_aud": False,
}


def _check_claims(claims: dict[str, Any], max_lifetime: float) -> None:
    """`sub` a non-empty string; `exp` (required), `iat` and `nbf` JSON numbers; a lifetime within the limit."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("the token needs a 'sub' claim naming who it is for")
    if len(sub) > MAX_SUBJECT:  # it is echoed in answers and written to the audit log
        raise Unauthorized(f"the token's 'sub' is longer than {MAX_SUBJECT} characters")
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if (value is not None or name == "exp") and (isinstance(value, bool) or not isinstance(value, int | float)):
            what = "has no 'exp' claim" if value is None else f"has an '{name}' claim that is not a number"
            raise Unauthorized(f"the token {what}")
    start = claims.get("iat", time.time())
    lifetime = claims["exp"] - start
    if lifetime > max_lifetime:
        raise Unauthorized(
            f"the token is valid for {lifetime / 3600:.1f} h, longer than the limit of {max_lifetime / 3600:g} h"
            " (JWT_MAX_LIFETIME)"
        )


def _reason(exc: jwt.PyJWTError) -> str:
    """Why a token was refused, in our words: PyJWT's own messages ("Invalid crypto padding") stay inside."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim!r} claim"
    return "the token is not a valid JWT"


_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAudienceError, "the token is not meant for this audience (JWT_AUDIENCE)"),
    (jwt.InvalidIssuerError, "the token's issuer is not accepted (JWT_ISSUER)"),
    (InvalidSubjectError, "the token needs a 'sub' claim naming who it is for"),
    (jwt.PyJWKClientError, "no key of the identity provider verifies the token"),
)


def _roles(claims: dict[str, Any]) -> frozenset[str]:
    """Roles from a `role` string and/or a `roles` list."""
    roles = set()
    if isinstance(claims.get("role"), str):
        roles.add(claims["role"])
    if isinstance(claims.get("roles"), list):
        roles.update(r for r in claims["roles"] if isinstance(r, str))
    return frozenset(roles)
