"""One frozen settings object, read once from flags and the environment."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config.durations import parse_duration

# The admin listener can change running code, so it binds loopback unless configured (CONTRACT §3); the
# Dockerfile, compose and the Helm chart set `:8081` explicitly.
DEFAULT_ADMIN_ADDR = "127.0.0.1:8081"


class SettingsError(ValueError):
    """A flag or environment variable with an unusable value; the message names it."""


@dataclass(frozen=True, slots=True)
class Address:
    """A listening address; an empty host means every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Database:
    """PostgreSQL connection settings; present only when WORKFLOW_DB_HOST is set."""

    host: str
    port: int = 5432
    name: str = "workflow"
    user: str = "workflow"
    password: str = ""
    pool_size: int = 10
    schema: str = ""  # tables in this schema instead of the user's default (several deployments, one database)

    def dsn(self) -> str:
        """A libpq connection string (the password is passed, never logged)."""
        parts = {"host": self.host, "port": self.port, "dbname": self.name, "user": self.user}
        if self.password:
            parts["password"] = self.password
        if self.schema:
            parts["options"] = f"-c search_path={self.schema}"
        return " ".join(f"{k}={_quote(str(v))}" for k, v in parts.items())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# WORKFLOW_REDACT_KEYS by default: values under keys containing one of these are not kept in execution details.
REDACT_KEYS = ("password", "secret", "token", "authorization", "api_key", "cookie")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server reads from its environment, typed and validated."""

    config_path: Path | None = None
    addr: Address = Address("", 8080)
    admin_addr: Address = Address("127.0.0.1", 8081)  # it can change running code: loopback unless told otherwise
    components_dir: Path = Path("components")
    data_dir: Path = Path("data")
    log_format: str = "text"
    log_level: str = "INFO"
    access_log: bool = True  # one line per request at info (WORKFLOW_ACCESS_LOG)
    event_loop: str = "auto"  # auto (uvloop when installed), uvloop or asyncio (WORKFLOW_EVENT_LOOP)
    max_body_bytes: int = 1024 * 1024
    max_json_depth: int = 64  # nesting limit of JSON bodies and of YAML configs alike
    shutdown_timeout: float = 30.0
    step_timeout: float = 30.0
    async_workers: int = 8
    queue_visibility: float = 60.0  # a claimed job whose worker stopped heartbeating runs again after this
    queue_max_attempts: int = 5  # then the job goes to the dead-letter list
    queue_retry_delay: float = 1.0  # the first retry's backoff; it doubles per attempt, with jitter
    execution_history: int = 10_000
    step_threads: int = 16
    watch: bool = True
    debounce: float = 0.05
    polling: bool = False
    drain_timeout: float = 30.0
    lifecycle_timeout: float = 10.0
    max_source_bytes: int = 256 * 1024
    component_imports: frozenset[str] | None = None
    jwt_secret: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    jwt_max_lifetime: float = 86400.0  # longest token lifetime accepted, and the cap of `workflow-server token --ttl`
    db: Database | None = None
    redis_addr: str | None = None
    deployment: str | None = None  # prefix of the queue's Redis keys; None: the store's identity (deployment_name)
    # WORKFLOW_QUEUE_BACKEND: "redis", "store", or None for Redis whenever redis_addr is set (see queue_on_redis).
    queue_backend: str | None = None
    replica_id: str = "local"
    reconcile_interval: float = 30.0
    history_days: float = 7.0
    record_executions: bool = True
    # An execution's recorded detail (payload, step outputs): its size cap, and the key words redacted in it.
    detail_max_bytes: int = 65536
    redact_keys: tuple[str, ...] = REDACT_KEYS
    # Candidate isolation (server/reload/isolation.py): each version is imported in a disposable process first.
    isolate_components: bool = True
    import_timeout: float = 10.0
    import_memory_mb: int = 1024  # address space a candidate may add to the helper's
    isolation_preload: tuple[str, ...] = ()  # modules the helper imports once, so candidates start warm

    @property
    def sqlite_path(self) -> Path:
        """The embedded store's file (also the default connection of the database steps without PostgreSQL)."""
        return self.data_dir / "workflow.db"

    @property
    def queue_on_redis(self) -> bool:
        """The durable queue lives in Redis Streams (CONTRACT §8), unless WORKFLOW_QUEUE_BACKEND=store."""
        return self.redis_addr is not None and self.queue_backend != "store"

    @property
    def deployment_name(self) -> str:
        """WORKFLOW_DEPLOYMENT, else the store's identity: replicas sharing a store share the queue's Redis keys."""
        if self.deployment:
            return self.deployment
        if self.db is not None:
            return f"{self.db.host}:{self.db.port}/{self.db.name}/{self.db.schema or 'default'}"
        return str(self.sqlite_path.resolve())


def parse_address(text: str, *, name: str) -> Address:
    """Parse `:PORT`, `HOST:PORT` or `[V6]:PORT`."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or ("]" in host):
        raise SettingsError(f"{name}: {text!r} is not an address like ':8080', 'HOST:PORT' or '[::1]:PORT'")
    return Address(host, int(port))


def from_environment(
    env: Mapping[str, str] | None = None,
    *,
    config: str | None = None,
    addr: str | None = None,
    admin_addr: str | None = None,
    stream_is_tty: bool | None = None,
) -> Settings:
    """Settings from the environment, with command-line flags taking precedence."""
    env = os.environ if env is None else env
    tty = sys.stderr.isatty() if stream_is_tty is None else stream_is_tty
    config = config or env.get("WORKFLOW_CONFIG") or None
    log_format = env.get("WORKFLOW_LOG_FORMAT", "text" if tty else "json").lower()
    if log_format not in ("json", "text"):
        raise SettingsError(f"WORKFLOW_LOG_FORMAT: {log_format!r} is not 'json' or 'text'")
    log_level = env.get("WORKFLOW_LOG_LEVEL", "info").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(f"WORKFLOW_LOG_LEVEL: {log_level.lower()!r} is not debug, info, warning or error")
    return Settings(
        config_path=Path(config) if config else None,
        addr=parse_address(addr or env.get("WORKFLOW_ADDR", ":8080"), name="--addr" if addr else "WORKFLOW_ADDR"),
        admin_addr=parse_address(
            admin_addr or env.get("WORKFLOW_ADMIN_ADDR", DEFAULT_ADMIN_ADDR),
            name="--admin-addr" if admin_addr else "WORKFLOW_ADMIN_ADDR",
        ),
        components_dir=Path(env.get("WORKFLOW_COMPONENTS_DIR", "components")),
        data_dir=Path(env.get("WORKFLOW_DATA_DIR", "data")),
        log_format=log_format,
        log_level=log_level,
        access_log=_flag(env, "WORKFLOW_ACCESS_LOG", True),
        event_loop=_event_loop(env),
        max_body_bytes=_positive_int(env, "WORKFLOW_MAX_BODY_BYTES", 1024 * 1024),
        max_json_depth=_positive_int(env, "WORKFLOW_MAX_JSON_DEPTH", 64),
        shutdown_timeout=_duration(env, "WORKFLOW_SHUTDOWN_TIMEOUT", "30s"),
        step_timeout=_duration(env, "WORKFLOW_STEP_TIMEOUT", "30s"),
        async_workers=_positive_int(env, "WORKFLOW_ASYNC_WORKERS", 8),
        queue_visibility=_duration(env, "WORKFLOW_QUEUE_VISIBILITY_TIMEOUT", "60s"),
        queue_max_attempts=_positive_int(env, "WORKFLOW_QUEUE_MAX_ATTEMPTS", 5),
        queue_retry_delay=_duration(env, "WORKFLOW_QUEUE_RETRY_DELAY", "1s"),
        execution_history=_positive_int(env, "WORKFLOW_EXECUTION_HISTORY", 10_000),
        step_threads=_positive_int(env, "WORKFLOW_STEP_THREADS", 16),
        watch=_flag(env, "WORKFLOW_WATCH", True),
        debounce=_duration(env, "WORKFLOW_COMPONENTS_DEBOUNCE", "50ms"),
        polling=_flag(env, "WORKFLOW_COMPONENTS_POLLING", False),
        drain_timeout=_duration(env, "WORKFLOW_DRAIN_TIMEOUT", "30s"),
        lifecycle_timeout=_duration(env, "WORKFLOW_LIFECYCLE_TIMEOUT", "10s"),
        max_source_bytes=_positive_int(env, "WORKFLOW_MAX_SOURCE_BYTES", 256 * 1024),
        component_imports=_names(env.get("WORKFLOW_COMPONENT_IMPORTS")),
        jwt_secret=env.get("JWT_SECRET") or None,
        jwt_issuer=env.get("JWT_ISSUER") or None,
        jwt_audience=env.get("JWT_AUDIENCE") or None,
        jwt_jwks_url=env.get("JWT_JWKS_URL") or None,
        jwt_max_lifetime=_duration(env, "JWT_MAX_LIFETIME", "24h"),
        db=_database(env),
        redis_addr=_redis_url(env.get("WORKFLOW_REDIS_ADDR")),
        deployment=env.get("WORKFLOW_DEPLOYMENT") or None,
        queue_backend=_queue_backend(env),
        replica_id=env.get("WORKFLOW_REPLICA_ID") or _default_replica_id(addr or env.get("WORKFLOW_ADDR", ":8080")),
        reconcile_interval=_duration(env, "WORKFLOW_RECONCILE_INTERVAL", "30s"),
        history_days=_duration(env, "WORKFLOW_HISTORY_RETENTION", "168h") / 86400,
        record_executions=_flag(env, "WORKFLOW_RECORD_EXECUTIONS", True),
        detail_max_bytes=_whole(env, "WORKFLOW_EXECUTION_DETAIL_BYTES", 65536),
        redact_keys=_name_list(env.get("WORKFLOW_REDACT_KEYS", ",".join(REDACT_KEYS))),
        isolate_components=_flag(env, "WORKFLOW_ISOLATE_COMPONENTS", True),
        import_timeout=_duration(env, "WORKFLOW_IMPORT_TIMEOUT", "10s"),
        import_memory_mb=_positive_int(env, "WORKFLOW_IMPORT_MEMORY_MB", 1024),
        isolation_preload=_name_list(env.get("WORKFLOW_ISOLATION_PRELOAD")),
    )


def _event_loop(env: Mapping[str, str]) -> str:
    choice = env.get("WORKFLOW_EVENT_LOOP", "auto").lower() or "auto"
    if choice not in ("auto", "uvloop", "asyncio"):
        raise SettingsError(f"WORKFLOW_EVENT_LOOP: {choice!r} is not auto, uvloop or asyncio")
    return choice


def _redis_url(value: str | None) -> str | None:
    """A `redis://` URL from WORKFLOW_REDIS_ADDR, which may be `host:port` or a URL already."""
    if not value:
        return None
    if value.startswith(("redis://", "rediss://", "unix://")):
        return value
    parse_address(value, name="WORKFLOW_REDIS_ADDR")
    return f"redis://{value}"


def _default_replica_id(addr: str) -> str:
    """The host name and main port: unique per replica behind a load balancer, stable across restarts."""
    return f"{socket.gethostname()}:{addr.rpartition(':')[2]}"


def _database(env: Mapping[str, str]) -> Database | None:
    """PostgreSQL settings when WORKFLOW_DB_HOST is set (`host` or `host:port`), else None."""
    raw = env.get("WORKFLOW_DB_HOST")
    if not raw:
        return None
    host, _, port = raw.rpartition(":") if raw.count(":") == 1 else (raw, "", "")
    if port and not port.isdigit():
        raise SettingsError(f"WORKFLOW_DB_HOST: {raw!r} is not HOST or HOST:PORT")
    return Database(
        host=host or raw,
        port=int(port) if port else 5432,
        name=env.get("WORKFLOW_DB_NAME", "workflow"),
        user=env.get("WORKFLOW_DB_USER", "workflow"),
        password=env.get("WORKFLOW_DB_PASSWORD", ""),
        pool_size=_positive_int(env, "WORKFLOW_DB_POOL_SIZE", 10),
        schema=_schema(env),
    )


def _schema(env: Mapping[str, str]) -> str:
    schema = env.get("WORKFLOW_DB_SCHEMA", "")
    if schema and not schema.replace("_", "a").isalnum():  # it goes into a connection option unquoted
        raise SettingsError(f"WORKFLOW_DB_SCHEMA: {schema!r} is not a name of letters, digits and _")
    return schema


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise SettingsError(f"{name}: {raw!r} is not a positive whole number")
    return int(raw)


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number, 0 allowed (off)."""
    raw = env.get(name, str(default)).strip()
    if not raw.isdigit():
        raise SettingsError(f"{name}: {raw!r} is not a whole number")
    return int(raw)


def _names(raw: str | None) -> frozenset[str] | None:
    """A comma-separated list of names, or None when unset (no policy)."""
    if raw is None or not raw.strip():
        return None
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _name_list(raw: str | None) -> tuple[str, ...]:
    """A comma-separated list of names, in order (empty when unset)."""
    return tuple(name.strip() for name in (raw or "").split(",") if name.strip())


def _queue_backend(env: Mapping[str, str]) -> str | None:
    """WORKFLOW_QUEUE_BACKEND: `redis` (the default when WORKFLOW_REDIS_ADDR is set) or `store`."""
    raw = env.get("WORKFLOW_QUEUE_BACKEND")
    if not raw:
        return None
    backend = raw.strip().lower()
    if backend not in ("redis", "store"):
        raise SettingsError(f"WORKFLOW_QUEUE_BACKEND: {backend!r} is neither 'redis' nor 'store'")
    if backend == "redis" and not env.get("WORKFLOW_REDIS_ADDR"):
        raise SettingsError("WORKFLOW_QUEUE_BACKEND: the queue on Redis needs WORKFLOW_REDIS_ADDR")
    return backend


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}: {raw!r} is not true or false")


def _duration(env: Mapping[str, str], name: str, default: str) -> float:
    raw = env.get(name, default)
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None
