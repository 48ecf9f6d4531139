"""JWT authentication of the admin API, with tokens from PyJWT and from another JOSE library (joserfc)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time

import jwt as pyjwt
import pytest
from aiohttp import web
from joserfc import jwt as jose
from joserfc.jwk import ECKey, OctKey, RSAKey

from server.admin.auth import Authenticator, require_admin
from server.http.middleware import middleware
from server.keys import IDENTITY, METRICS, SETTINGS
from server.metrics.catalog import Metrics
from server.settings import Settings
from tests.conftest import ROOT

SECRET = "s" * 40
NOW = int(time.time())


def hs256(claims: dict, secret: str = SECRET) -> str:
    return jose.encode({"alg": "HS256"}, claims, OctKey.import_key(secret.encode()))


def unsigned(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.fixture
async def admin_client(aiohttp_client):
    async def make(**settings_fields):
        settings = Settings(**{"jwt_secret": SECRET, **settings_fields})
        app = web.Application(middlewares=[middleware])
        app[SETTINGS], app[METRICS] = settings, Metrics()

        async def whoami(request: web.Request) -> web.Response:
            identity = request[IDENTITY]
            return web.json_response({"subject": identity.subject, "roles": sorted(identity.roles)})

        app.router.add_get("/api/whoami", require_admin(Authenticator(settings))(whoami))
        return await aiohttp_client(app)

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("claims", "roles"),
    [
        ({"sub": "ada", "role": "admin", "exp": NOW + 60}, ["admin"]),
        ({"sub": "ada", "roles": ["viewer", "admin"], "exp": NOW + 60}, ["admin", "viewer"]),
    ],
)
async def test_tokens_from_another_jose_library_are_accepted(admin_client, claims, roles):
    client = await admin_client()
    response = await client.get("/api/whoami", headers=bearer(hs256(claims)))
    assert response.status == 200
    assert await response.json() == {"subject": "ada", "roles": roles}


async def test_the_cli_token_is_accepted(admin_client):
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server", "token", "--sub", "ops", "--role", "admin", "--ttl", "5m"],
        cwd=ROOT,
        env={"JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = pyjwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ops" and claims["role"] == "admin" and 290 <= claims["exp"] - claims["iat"] <= 300
    client = await admin_client()
    response = await client.get("/api/whoami", headers=bearer(token))
    assert (response.status, await response.json()) == (200, {"subject": "ops", "roles": ["admin"]})


def test_the_cli_refuses_a_short_secret():
    result = subprocess.run(
        [sys.executable, "-m", "server", "token", "--sub", "ops"],
        cwd=ROOT,
        env={"JWT_SECRET": "short", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "at least 32 bytes" in result.stderr


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "a bearer token is required"),
        ({"Authorization": "Basic YTpi"}, "a bearer token is required"),
        (bearer(hs256({"sub": "a", "role": "admin", "exp": NOW - 10})), "expired"),
        (bearer(hs256({"sub": "a", "role": "admin", "exp": NOW + 60}, "w" * 40)), "Signature verification failed"),
        (bearer(hs256({"sub": "a", "role": "admin"})), 'missing the "exp" claim'),
        (bearer(unsigned({"sub": "a", "role": "admin", "exp": NOW + 60})), "'none' are not accepted"),
        (bearer("not.a.token"), "invalid token"),
    ],
)
async def test_bad_tokens_are_401_with_a_bearer_challenge(admin_client, headers, needle):
    client = await admin_client()
    response = await client.get("/api/whoami", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="workflow-admin"')
    assert needle in (await response.json())["error"]


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "bob", "exp": NOW + 60},
        {"sub": "bob", "role": "viewer", "exp": NOW + 60},
        {"sub": "bob", "roles": "admin", "exp": NOW + 60},  # a string where a list belongs is not a role list
    ],
)
async def test_a_valid_token_without_the_admin_role_is_403(admin_client, claims):
    client = await admin_client()
    response = await client.get("/api/whoami", headers=bearer(hs256(claims)))
    assert response.status == 403
    assert await response.json() == {"error": "'bob' does not have the 'admin' role"}


async def test_issuer_and_audience_are_checked_when_configured(admin_client):
    client = await admin_client(jwt_issuer="https://id.example", jwt_audience="workflow")
    good = {"sub": "a", "role": "admin", "exp": NOW + 60, "iss": "https://id.example", "aud": "workflow"}
    response = await client.get("/api/whoami", headers=bearer(hs256(good)))
    assert (response.status, await response.json()) == (200, {"subject": "a", "roles": ["admin"]})
    for wrong, error in (
        ({"iss": "https://evil.example"}, "Invalid issuer"),
        ({"aud": "other"}, "Audience doesn't match"),
        ({"aud": None}, 'Token is missing the "aud" claim'),
    ):
        claims = {k: v for k, v in {**good, **wrong}.items() if v is not None}
        response = await client.get("/api/whoami", headers=bearer(hs256(claims)))
        assert (response.status, await response.json()) == (401, {"error": f"invalid token: {error}"}), wrong


@pytest.mark.parametrize(
    ("secret", "needle"), [(None, "neither JWT_SECRET nor JWT_JWKS_URL"), ("short", "shorter than 32 bytes")]
)
async def test_without_a_usable_secret_every_call_is_503(admin_client, secret, needle):
    client = await admin_client(jwt_secret=secret)
    response = await client.get("/api/whoami", headers=bearer(hs256({"sub": "a", "role": "admin", "exp": NOW + 60})))
    assert response.status == 503
    assert needle in (await response.json())["error"]


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}), "RS256"),
        (ECKey.generate_key("P-256", parameters={"kid": "ec-1"}), "ES256"),
    ],
)
async def test_jwks_tokens_from_an_identity_provider(admin_client, aiohttp_server, key, alg):
    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [{**key.as_dict(private=False), "kid": key.kid, "alg": alg, "use": "sig"}]})

    provider = web.Application()
    provider.router.add_get("/.well-known/jwks.json", jwks)
    idp = await aiohttp_server(provider)
    client = await admin_client(jwt_secret=None, jwt_jwks_url=f"http://127.0.0.1:{idp.port}/.well-known/jwks.json")
    token = jose.encode({"alg": alg, "kid": key.kid}, {"sub": "sso", "roles": ["admin"], "exp": NOW + 60}, key)
    response = await client.get("/api/whoami", headers=bearer(token))
    assert (response.status, await response.json()) == (200, {"subject": "sso", "roles": ["admin"]})
    # HS256 is not accepted when only a JWKS is configured (no algorithm confusion with the public key).
    forged = pyjwt.encode({"sub": "x", "role": "admin", "exp": NOW + 60}, "k" * 40, algorithm="HS256")
    response = await client.get("/api/whoami", headers=bearer(forged))
    assert (response.status, await response.json()) == (401, {"error": "tokens signed with 'HS256' are not accepted"})
    other = (RSAKey if alg == "RS256" else ECKey).generate_key(
        2048 if alg == "RS256" else "P-256", parameters={"kid": key.kid}
    )
    wrong = jose.encode({"alg": alg, "kid": key.kid}, {"sub": "sso", "roles": ["admin"], "exp": NOW + 60}, other)
    response = await client.get("/api/whoami", headers=bearer(wrong))
    assert (response.status, await response.json()) == (401, {"error": "invalid token: Signature verification failed"})
