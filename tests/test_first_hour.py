"""The first hour: `make run`'s development admin secret and token, `--help`, and the admin listener on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
from pathlib import Path

import aiohttp
import jwt

from server.settings import Address, Settings, from_environment
from tests.conftest import ROOT, free_port, run_cli, server_command

EXAMPLE = ROOT / "example" / "order-processing-pipeline.yaml"


def test_help_lists_the_subcommands_with_examples() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    usage = result.stdout
    assert usage.startswith(
        "usage: workflow-server [run] [-config FILE] [--addr ADDR] [--admin-addr ADDR] [--dev]\n"
        "       workflow-server validate FILE\n"
        "       workflow-server token --sub NAME [--role ROLE] [--ttl TTL] [--dev]\n"
    )
    assert "\n  workflow-server validate example/order-processing-pipeline.yaml\n" in usage
    assert "\n  JWT_SECRET=... workflow-server token --sub ada --role admin --ttl 15m\n" in usage
    for command in ("validate", "token"):
        sub = run_cli(command, "--help")
        assert (sub.returncode, sub.stdout.startswith(f"usage: workflow-server {command} ")) == (0, True)
        assert "example" in sub.stdout


def test_the_admin_listener_defaults_to_loopback() -> None:
    assert from_environment({}).admin_addr == Address("127.0.0.1", 8081)
    assert Settings().admin_addr == Address("127.0.0.1", 8081)
    assert from_environment({}).addr == Address("", 8080)  # the main listener stays on every interface
    assert from_environment({"WORKFLOW_ADMIN_ADDR": ":8081"}).admin_addr == Address("", 8081)


def test_token_dev_creates_the_secret_once_with_mode_0600(tmp_path: Path) -> None:
    env = {"WORKFLOW_DATA_DIR": str(tmp_path / "data")}
    first = run_cli("token", "--dev", "--sub", "ada", env=env)
    assert first.returncode == 0, first.stderr
    secret_file = tmp_path / "data" / "dev-jwt-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) == 64 and int(secret, 16) >= 0
    claims = jwt.decode(first.stdout.strip(), secret, algorithms=["HS256"])
    assert (claims["sub"], claims["role"]) == ("ada", "admin")
    second = run_cli("token", "--dev", "--sub", "bob", env=env)
    assert secret_file.read_text().strip() == secret  # kept: tokens printed earlier stay valid
    assert jwt.decode(second.stdout.strip(), secret, algorithms=["HS256"])["sub"] == "bob"


def test_token_without_a_secret_or_dev_says_what_to_set(tmp_path: Path) -> None:
    result = run_cli("token", "--sub", "ada", env={"WORKFLOW_DATA_DIR": str(tmp_path / "data")})
    assert (result.returncode, result.stdout) == (1, "")
    assert "JWT_SECRET must be set" in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    secret_file = tmp_path / "data" / "dev-jwt-secret"
    secret_file.write_text("a" * 64)
    secret_file.chmod(0o644)
    result = run_cli("token", "--dev", "--sub", "ada", env={"WORKFLOW_DATA_DIR": str(tmp_path / "data")})
    assert (result.returncode, result.stdout) == (1, "")
    assert (
        result.stderr == f"workflow-server: {secret_file}: mode 0644 lets others read the admin secret; chmod 600 it\n"
    )


def test_make_run_and_make_token_use_the_development_secret() -> None:
    for target, command in (
        ("run", ".venv/bin/workflow-server -config example/order-processing-pipeline.yaml --dev"),
        ("token", ".venv/bin/workflow-server token --dev --sub dev --role admin"),
    ):
        # Run from `make test` (as CI does), make would print "Entering/Leaving directory" lines: not here.
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        dry = subprocess.run(
            ["make", "-n", "--no-print-directory", target, "VENV=.venv"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.splitlines()[-1] == command


async def test_a_dev_run_prints_a_token_the_admin_api_accepts(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "JWT_"))}
    env |= {"WORKFLOW_DATA_DIR": str(tmp_path / "data"), "WORKFLOW_COMPONENTS_DIR": str(tmp_path / "components")}
    command = server_command(EXAMPLE, f"127.0.0.1:{port}", f"127.0.0.1:{admin}")
    proc = await asyncio.create_subprocess_exec(
        *command, "--dev", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        lines = [(await asyncio.wait_for(proc.stderr.readline(), 30)).decode() for _ in range(4)]
        secret_file = tmp_path / "data" / "dev-jwt-secret"
        assert lines[0] == f"development admin token (role admin, 12h; secret in {secret_file}):\n"
        assert lines[1].startswith("  export TOKEN=")
        token = lines[1].removeprefix("  export TOKEN=").strip()
        url = f"http://127.0.0.1:{admin}/api/dynamic/components"
        assert lines[2] == f'  curl -s {url} -H "Authorization: Bearer $TOKEN"\n'
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as ready:
                    if ready.status == 200:
                        break
                await asyncio.sleep(0.05)
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200, await response.text()
                assert await response.json() == {"components": []}
            async with session.get(url) as response:
                assert response.status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
