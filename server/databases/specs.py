"""The `connections:` section of the config: one frozen spec per named database, validated with lines."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

DRIVERS = ("postgres", "sqlite")
# The server's own database (PostgreSQL when WORKFLOW_DB_* is set, else the store's SQLite file).
DEFAULT = "default"
DEFAULT_POOL_SIZE = 4
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_KEYS = {"postgres": {"driver", "dsn", "pool_size"}, "sqlite": {"driver", "path"}}

Report = Callable[[int, str], None]


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """One database a step may use; equal specs share one pool, so a config reload keeps it."""

    name: str
    driver: str
    # A libpq string or URL: it may hold a password, so it never appears in a repr or a log line.
    dsn: str = field(default="", repr=False)
    path: str = ""
    pool_size: int = DEFAULT_POOL_SIZE


def parse_connections(raw: Any, line: int, report: Report) -> dict[str, ConnectionSpec | None]:
    """Specs by name from the `connections:` mapping; each problem goes to `report(line, message)`.

    A connection with problems maps to None, so steps naming it are not reported a second time.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        report(line, "'connections' must map connection names to {driver, dsn | path}")
        return {}
    specs: dict[str, ConnectionSpec | None] = {}
    for name, entry in raw.items():
        where = _line_of(raw, name, line)
        specs[str(name)] = _spec(str(name), entry, where, report)
    return specs


def _spec(name: str, entry: Any, line: int, report: Report) -> ConnectionSpec | None:
    label = f"connection {name!r}"
    if name == DEFAULT:
        report(line, f"{label}: the name {DEFAULT!r} is reserved for the server's own database")
        return None
    if not _NAME.match(name):
        report(line, f"{label}: names are letters, digits, '_' and '-'")
        return None
    if not isinstance(entry, Mapping):
        report(line, f"{label}: must be a mapping with 'driver' and 'dsn' (postgres) or 'path' (sqlite)")
        return None
    driver = entry.get("driver")
    if driver not in DRIVERS:
        report(_line_of(entry, "driver", line), f"{label}: driver {driver!r} is not one of {', '.join(DRIVERS)}")
        return None
    ok = True
    for key in entry:
        if key not in _KEYS[driver]:
            report(
                _line_of(entry, key, line),
                f"{label}: unknown key {key!r} for driver {driver} (expected {', '.join(sorted(_KEYS[driver]))})",
            )
            ok = False
    needed = "dsn" if driver == "postgres" else "path"
    value = entry.get(needed)
    if not isinstance(value, str) or not value.strip():
        report(_line_of(entry, needed, line), f"{label}: a {driver} connection needs '{needed}'")
        ok = False
    pool_size = entry.get("pool_size", DEFAULT_POOL_SIZE)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size <= 0:
        report(_line_of(entry, "pool_size", line), f"{label}: pool_size must be a positive whole number")
        ok = False
    if not ok or not isinstance(value, str):  # a value that is not text cleared ok above
        return None
    if driver == "postgres":
        return ConnectionSpec(name, driver, dsn=value, pool_size=pool_size)
    return ConnectionSpec(name, driver, path=value)


def _line_of(mapping: Any, key: Any, fallback: int) -> int:
    line_of = getattr(mapping, "line_of", None)
    return (line_of(key) or fallback) if line_of else fallback


# --------------------------------------------------------------------------- during a config load

# The connections of the config being compiled, for `prepare` functions, which receive only their step's config.
_declared: ContextVar[Mapping[str, ConnectionSpec | None]] = ContextVar("declared_connections")


@contextmanager
def declared_connections(specs: Mapping[str, ConnectionSpec | None]) -> Iterator[None]:
    """Make `specs` what `lookup_connection` sees while a config compiles."""
    token = _declared.set(specs)
    try:
        yield
    finally:
        _declared.reset(token)


def lookup_connection(name: Any) -> ConnectionSpec | None:
    """The spec a step's `connection:` names (None for the server's own); ValueError when unknown.

    Call it from a step type's `prepare`: it reads the connections of the config being loaded.
    """
    if name is None or name == DEFAULT:
        return None
    declared = _declared.get({})
    if not isinstance(name, str) or name not in declared:
        known = ", ".join(sorted([DEFAULT, *declared]))
        raise ValueError(f"unknown connection {name!r} (the config declares: {known})")
    return declared[name]
