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

from server.admin.auth import Authenticator
from server.admin.guard import Sessions, require
from server.http.middleware import middleware
from server.keys import IDENTITY, METRICS, SETTINGS
from server.metrics.catalog import Metrics
from server.settings import Settings
from tests.conftest import ROOT

SECRET = "s" * 40
# Stamped at import: the tokens below live an hour, so a slow run (a busy CI machine) never sees them expire.
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

        app.router.add_get("/api/whoami", require(Sessions(Authenticator(settings)), write=True)(whoami))
        return await aiohttp_client(app)

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("claims", "roles"),
    [
        ({"sub": "ada", "role": "admin", "exp": NOW + 3600}, ["admin"]),
        ({"sub": "ada", "roles": ["viewer", "admin"], "exp": NOW + 3600}, ["admin", "viewer"]),
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
        (bearer(hs256({"sub": "a", "role": "admin", "exp": NOW + 3600}, "w" * 40)), "signature does not verify"),
        (bearer(hs256({"sub": "a", "role": "admin"})), "the token has no 'exp' claim"),
        (bearer(unsigned({"sub": "a", "role": "admin", "exp": NOW + 3600})), "'none' are not accepted"),
        (bearer("not.a.token"), "the token is not a valid JWT"),
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
        {"sub": "bob", "exp": NOW + 3600},
        {"sub": "bob", "role": "viewer", "exp": NOW + 3600},
        {"sub": "bob", "roles": "admin", "exp": NOW + 3600},  # a string where a list belongs is not a role list
    ],
)
async def test_a_valid_token_without_the_admin_role_is_403(admin_client, claims):
    client = await admin_client()
    response = await client.get("/api/whoami", headers=bearer(hs256(claims)))
    assert response.status == 403
    assert await response.json() == {"error": "'bob' does not have the 'admin' role"}


async def test_issuer_and_audience_are_checked_when_configured(admin_client):
    client = await admin_client(jwt_issuer="https://id.example", jwt_audience="workflow")
    good = {"sub": "a", "role": "admin", "exp": NOW + 3600, "iss": "https://id.example", "aud": "workflow"}
    response = await client.get("/api/whoami", headers=bearer(hs256(good)))
    assert (response.status, await response.json()) == (200, {"subject": "a", "roles": ["admin"]})
    for wrong, error in (
        ({"iss": "https://evil.example"}, "the token's issuer is not accepted (JWT_ISSUER)"),
        ({"aud": "other"}, "the token is not meant for this audience (JWT_AUDIENCE)"),
        ({"aud": None}, "the token has no 'aud' claim"),
    ):
        claims = {k: v for k, v in {**good, **wrong}.items() if v is not None}
        response = await client.get("/api/whoami", headers=bearer(hs256(claims)))
        assert (response.status, await response.json()) == (401, {"error": error}), wrong


@pytest.mark.parametrize(
    ("secret", "needle"), [(None, "neither JWT_SECRET nor JWT_JWKS_URL"), ("short", "shorter than 32 bytes")]
)
async def test_without_a_usable_secret_every_call_is_503(admin_client, secret, needle):
    client = await admin_client(jwt_secret=secret)
    response = await client.get("/api/whoami", headers=bearer(hs256({"sub": "a", "role": "admin", "exp": NOW + 3600})))
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
    token = jose.encode({"alg": alg, "kid": key.kid}, {"sub": "sso", "roles": ["admin"], "exp": NOW + 3600}, key)
    response = await client.get("/api/whoami", headers=bearer(token))
    assert (response.status, await response.json()) == (200, {"subject": "sso", "roles": ["admin"]})
    # HS256 is not accepted when only a JWKS is configured (no algorithm confusion with the public key).
    forged = pyjwt.encode({"sub": "x", "role": "admin", "exp": NOW + 3600}, "k" * 40, algorithm="HS256")
    response = await client.get("/api/whoami", headers=bearer(forged))
    assert (response.status, await response.json()) == (401, {"error": "tokens signed with 'HS256' are not accepted"})
    other = (RSAKey if alg == "RS256" else ECKey).generate_key(
        2048 if alg == "RS256" else "P-256", parameters={"kid": key.kid}
    )
    wrong = jose.encode({"alg": alg, "kid": key.kid}, {"sub": "sso", "roles": ["admin"], "exp": NOW + 3600}, other)
    response = await client.get("/api/whoami", headers=bearer(wrong))
    assert (response.status, await response.json()) == (401, {"error": "the token's signature does not verify"})


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"role": "admin", "exp": NOW + 3600}, "the token needs a 'sub' claim naming who it is for"),
        ({"sub": "", "role": "admin", "exp": NOW + 3600}, "the token needs a 'sub' claim naming who it is for"),
        ({"sub": 7, "role": "admin", "exp": NOW + 3600}, "the token needs a 'sub' claim naming who it is for"),
        ({"sub": "x" * 129, "role": "admin", "exp": NOW + 3600}, "the token's 'sub' is longer than 128 characters"),
        ({"sub": "a", "role": "admin", "exp": str(NOW + 3600)}, "the token has an 'exp' claim that is not a number"),
        ({"sub": "a", "role": "admin", "exp": True}, "the token has an 'exp' claim that is not a number"),
        ({"sub": "a", "role": "admin", "exp": "soon"}, "the token has an 'exp' claim that is not a number"),
        (
            {"sub": "a", "role": "admin", "exp": NOW + 3600, "iat": "0"},
            "the token has an 'iat' claim that is not a number",
        ),
        (
            {"sub": "a", "role": "admin", "exp": NOW + 3600, "nbf": [1]},
            "the token has an 'nbf' claim that is not a number",
        ),
        # Lifetime: exp - iat, or exp - now without iat; the default limit is 24 h.
        (
            {"sub": "a", "role": "admin", "iat": NOW, "exp": NOW + 86401},
            "the token is valid for 24.0 h, longer than the limit of 24 h (JWT_MAX_LIFETIME)",
        ),
        (
            {"sub": "a", "role": "admin", "exp": NOW + 10 * 86400},
            "the token is valid for 240.0 h, longer than the limit of 24 h (JWT_MAX_LIFETIME)",
        ),
        (
            {"sub": "a", "role": "admin", "iat": NOW - 86400, "exp": NOW + 3600},
            "the token is valid for 25.0 h, longer than the limit of 24 h (JWT_MAX_LIFETIME)",
        ),
    ],
)
async def test_claims_of_the_wrong_kind_or_lifetime_are_401(admin_client, claims, error):
    client = await admin_client()
    response = await client.get("/api/whoami", headers=bearer(hs256(claims)))
    assert (response.status, await response.json()) == (401, {"error": error})


async def test_the_lifetime_limit_is_a_setting(admin_client):
    claims = {"sub": "a", "role": "admin", "iat": NOW, "exp": NOW + 3 * 86400}
    client = await admin_client(jwt_max_lifetime=7 * 86400.0)
    response = await client.get("/api/whoami", headers=bearer(hs256(claims)))
    assert (response.status, await response.json()) == (200, {"subject": "a", "roles": ["admin"]})
    client = await admin_client(jwt_max_lifetime=3600.0)
    response = await client.get("/api/whoami", headers=bearer(hs256({**claims, "exp": NOW + 3601})))
    assert (await response.json())["error"].endswith("longer than the limit of 1 h (JWT_MAX_LIFETIME)")


@pytest.mark.parametrize(
    "token",
    [
        hs256({"sub": "a", "role": "admin", "exp": NOW + 3600})[:-3] + "!!!",  # PyJWT: "Invalid crypto padding"
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",  # PyJWT: "Invalid payload string: ..."
        "eyJhbGciOiJIUzI1NiJ9",  # PyJWT: "Not enough segments"
        "%%%.%%%.%%%",  # PyJWT: "Invalid header padding"
    ],
)
async def test_jwt_library_internals_never_reach_the_client(admin_client, token):
    client = await admin_client()
    response = await client.get("/api/whoami", headers=bearer(token))
    body = await response.json()
    assert response.status == 401
    assert body["error"] in ("the token is not a valid JWT", "the token's signature does not verify")
    assert body["error"] in response.headers["WWW-Authenticate"]


async def test_an_es256_token_naming_an_rsa_key_is_401(admin_client, aiohttp_server, caplog):
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "rsa-1"})

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [{**rsa.as_dict(private=False), "kid": "rsa-1", "alg": "RS256"}]})

    provider = web.Application()
    provider.router.add_get("/jwks.json", jwks)
    idp = await aiohttp_server(provider)
    client = await admin_client(jwt_secret=None, jwt_jwks_url=f"http://127.0.0.1:{idp.port}/jwks.json")
    token = jose.encode({"alg": "ES256", "kid": "rsa-1"}, {"sub": "x", "role": "admin", "exp": NOW + 3600}, ec)
    response = await client.get("/api/whoami", headers=bearer(token))
    assert (response.status, await response.json()) == (
        401,
        {"error": "the token is signed with ES256 but its key ('kid') is a RS256 key"},
    )
    assert [r for r in caplog.records if r.exc_info] == []


def run_token(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "token", *args],
        cwd=ROOT,
        env={"JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_cli_refuses_an_empty_sub_and_caps_the_ttl():
    for sub in ("", "  "):
        result = run_token("--sub", sub)
        assert result.returncode == 2 and "--sub must name who the token is for" in result.stderr
    result = run_token("--sub", "ops", "--ttl", "25h")
    assert result.returncode == 2
    assert "--ttl: 25h is longer than JWT_MAX_LIFETIME (24h)" in result.stderr
    result = run_token("--sub", "ops", "--ttl", "24h")
    claims = pyjwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 86400
    result = run_token("--sub", "ops", "--ttl", "48h", env={"JWT_MAX_LIFETIME": "72h"})
    claims = pyjwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 48 * 3600
