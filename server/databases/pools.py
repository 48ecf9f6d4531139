"""Closing an aiopg pool within a bounded time: shared by the store and the database steps."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiopg


async def close_pool(pool: aiopg.Pool, timeout: float) -> None:
    """Close an aiopg pool, waiting up to `timeout` seconds for connections in use, then terminate them."""
    pool.close()
    try:
        async with asyncio.timeout(timeout):
            await pool.wait_closed()
    except TimeoutError:
        pool.terminate()
        await pool.wait_closed()
