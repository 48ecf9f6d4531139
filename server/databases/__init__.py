"""Databases that steps query: the server's own (the default connection) and those the config names.

`specs` reads the config's `connections:` section, `drivers` talks to PostgreSQL and SQLite, and `manager`
owns the open connections; the engine opens a `Databases` with its other shared services and closes it last.
"""

from .drivers import Connection, DatabaseError, json_value
from .manager import Databases, default_spec
from .specs import (
    DEFAULT,
    DRIVERS,
    ConnectionSpec,
    declared_connections,
    lookup_connection,
    parse_connections,
)

__all__ = [
    "DEFAULT",
    "DRIVERS",
    "Connection",
    "ConnectionSpec",
    "DatabaseError",
    "Databases",
    "declared_connections",
    "default_spec",
    "json_value",
    "lookup_connection",
    "parse_connections",
]
