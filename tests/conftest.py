"""Shared fixtures: servers built from real config text, served on loopback by aiohttp_client."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from server.app import build_engine, create_apps
from server.engine import Engine
from server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    """A running main listener (and admin listener) around one engine."""

    client: TestClient
    admin: TestClient
    engine: Engine

    async def metrics(self) -> str:
        """The Prometheus text of the main listener."""
        response = await self.client.get("/metrics")
        return await response.text()


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a test server: folders under tmp_path, short timeouts."""
    return Settings(components_dir=tmp_path / "components", data_dir=tmp_path / "data",
                    shutdown_timeout=5.0, step_timeout=5.0)


@pytest.fixture
async def make_server(aiohttp_client, settings: Settings, tmp_path: Path) -> MakeServer:
    """Start a server from YAML text (dedented) and return its clients and engine."""

    async def make(config_text: str, **overrides: Any) -> Server:
        path = tmp_path / "config.yaml"
        path.write_text(textwrap.dedent(config_text))
        final = replace(settings, config_path=path, **overrides)
        engine = build_engine(final, entry_points=False)
        apps = create_apps(final, engine=engine)
        client = await aiohttp_client(apps.main)
        admin = await aiohttp_client(apps.admin)
        return Server(client, admin, engine)

    return make


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, or 0.0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in sample for k, v in labels.items()):
            if sample.split("{")[0] == name:
                return float(value)
    return 0.0


