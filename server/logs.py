"""Structured logging: JSON or text lines carrying the request and execution ids of their context."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
execution_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("execution_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def install_context_ids() -> None:
    """Stamp every log record, whoever handles it, with the request and execution ids of its context."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "stamps_context_ids", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id.get()
        record.execution_id = execution_id.get()
        return record

    factory.stamps_context_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """A readable line for terminals, with ids and extra fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and v is not None]
        return f"{line} {' '.join(extras)}" if extras else line


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    """Route every logger through one handler on stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    install_context_ids()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log would duplicate our one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # watchfiles logs every batch of changes; the reloader logs one line per reload instead.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
