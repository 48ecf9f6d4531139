"""The development admin secret of `make run` (`--dev`): random, kept under the data folder, mode 0600."""

from __future__ import annotations

import os
import secrets
import stat
import time
from dataclasses import replace
from pathlib import Path

import jwt

from .settings import Settings, SettingsError

FILE_NAME = "dev-jwt-secret"
TOKEN_TTL = 12 * 3600  # the printed token lasts a working day; `make token` mints another at any time
MIN_BYTES = 32


def dev_secret(data_dir: Path) -> str:
    """The secret in `data_dir/dev-jwt-secret`, created on first use; refused if others may read it."""
    path = data_dir / FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two first runs at once keep one secret; 0o600 from the start, so it is never readable by others.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(32) + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SettingsError(f"{path}: mode {mode:04o} lets others read the admin secret; chmod 600 it")
    secret = path.read_text().strip()
    if len(secret.encode()) < MIN_BYTES:
        raise SettingsError(f"{path}: the secret is shorter than {MIN_BYTES} bytes; delete the file for a new one")
    return secret


def with_dev_secret(settings: Settings) -> Settings:
    """`settings` with the development secret in place of JWT_SECRET."""
    return replace(settings, jwt_secret=dev_secret(settings.data_dir))


def admin_token(secret: str, sub: str, role: str, ttl: float) -> str:
    """An HS256 token for `sub` with `role`, valid for `ttl` seconds from now."""
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + int(ttl)}, secret, algorithm="HS256")


def banner(settings: Settings) -> str:
    """What `--dev` prints at start: a ready admin token and one call that uses it."""
    assert settings.jwt_secret is not None
    host = settings.admin_addr.host or "127.0.0.1"
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.admin_addr.port}"
    token = admin_token(settings.jwt_secret, "dev", "admin", TOKEN_TTL)
    return (
        f"development admin token (role admin, {TOKEN_TTL // 3600}h; secret in {settings.data_dir / FILE_NAME}):\n"
        f"  export TOKEN={token}\n"
        f'  curl -s {url}/api/dynamic/components -H "Authorization: Bearer $TOKEN"\n'
        "another one at any time: make -s token  (or: workflow-server token --dev --sub NAME)"
    )
