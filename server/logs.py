"""Structured logging: JSON or text lines carrying the request and execution ids of their context.

Every line goes through one LogOutput (server/logoutput.py), so the loop never waits on stdout. The access
log's line (one per request, logger `workflow.http`, level info) is the hottest: `access` builds it directly,
the same line the formatters would make from a LogRecord with the same fields, for a fraction of the cost.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, TextIO

from .logoutput import BufferedHandler, LogOutput

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


def setup_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> LogOutput:
    """Route every logger through one buffered handler on stderr (or `stream`) in the chosen format."""
    global output, access, _handler
    if output is not None:
        output.close()
    output = LogOutput(stream or sys.stderr)
    output.start()
    handler = BufferedHandler(output)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    access, _handler = (_json_access if fmt == "json" else _text_access), handler
    install_context_ids()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log would duplicate our one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # watchfiles logs every batch of changes; the reloader logs one line per reload instead.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    return output


def dropped_lines() -> int:
    """Log lines dropped so far because the output could not keep up (0 before setup_logging)."""
    return output.dropped if output is not None else 0


# --- The access log -------------------------------------------------------------------------------------
ACCESS_LOGGER = "workflow.http"
_access_log = logging.getLogger(ACCESS_LOGGER)

# (method, path, status, route label, seconds, remote address, request id) -> one line at info.
AccessLog = Callable[[str, str, int, str, float, "str | None", str], None]


def _log_access(method: str, path: str, status: int, route: str, seconds: float, remote: str | None, rid: str) -> None:
    """The access line as a LogRecord, for whatever handlers there are.

    Before setup_logging, and whenever a handler other than its own listens on the root logger (pytest's
    caplog, an application embedding the server): they all get the record, as they would any other line.
    """
    extra = {"status": status, "route": route, "duration_ms": round(seconds * 1000, 3), "remote": remote}
    _access_log.info("%s %s %d", method, path, status, extra=extra)


# The formatted whole second of the latest line, [second, text]: under load many lines share one second.
_utc_second: list[Any] = [-1, ""]  # JSONFormatter's time, in UTC
_local_second: list[Any] = [-1, ""]  # logging's default asctime, in local time


def _json_access(method: str, path: str, status: int, route: str, seconds: float, remote: str | None, rid: str) -> None:
    """The line JSONFormatter would write for _log_access's record, built directly."""
    handlers = _root.handlers
    if len(handlers) != 1 or handlers[0] is not _handler:  # see _log_access
        return _log_access(method, path, status, route, seconds, remote, rid)
    now = time.time()
    second = int(now)
    if second != _utc_second[0]:
        _utc_second[:] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    eid = execution_id.get()
    eid_field = "" if eid is None else ',"execution_id":' + _quote(eid)
    remote_field = "" if remote is None else ',"remote":' + _quote(remote)
    output_ = output
    assert output_ is not None  # set together with `access`
    output_.write(
        f'{{"time":"{_utc_second[1]}.{int((now - second) * 1000):03d}Z","level":"info","logger":"workflow.http",'
        f'"message":{_quote(f"{method} {path} {status}")},"request_id":{_quote(rid)}{eid_field},"status":{status},'
        f'"route":{_quote(route)},"duration_ms":{round(seconds * 1000, 3)!r}{remote_field}}}\n'
    )


def _text_access(method: str, path: str, status: int, route: str, seconds: float, remote: str | None, rid: str) -> None:
    """The line TextFormatter would write for _log_access's record, built directly."""
    handlers = _root.handlers
    if len(handlers) != 1 or handlers[0] is not _handler:  # see _log_access
        return _log_access(method, path, status, route, seconds, remote, rid)
    now = time.time()
    second = int(now)
    if second != _local_second[0]:
        _local_second[:] = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    eid = execution_id.get()
    output_ = output
    assert output_ is not None
    output_.write(
        f"{_local_second[1]},{int((now - second) * 1000):03d} INFO    workflow.http: {method} {path} {status} "
        f"request_id={rid}{'' if eid is None else ' execution_id=' + eid} status={status} route={route} "
        f"duration_ms={round(seconds * 1000, 3)}{'' if remote is None else ' remote=' + remote}\n"
    )


_root = logging.getLogger()
output: LogOutput | None = None  # the process's one output, once setup_logging ran
_handler: logging.Handler | None = None  # setup_logging's handler on the root logger
# The access line's writer (the middleware calls logs.access): built directly once setup_logging ran.
access: AccessLog = _log_access
