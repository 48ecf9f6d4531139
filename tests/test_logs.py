"""The log output and the access log: the same lines as the formatters make, buffered, never blocking, never lost."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import threading
from pathlib import Path

import aiohttp
import pytest

from server import logs
from server.logoutput import BufferedHandler, LogOutput
from server.metrics.catalog import Metrics
from tests.conftest import metric_value, start_server_process

ARGS = ("POST", '/api/orders/ü"x', 201, "/api/orders/{id}", 0.0004127, "127.0.0.1", 'req-"1"')


def _through_formatter(formatter: logging.Formatter) -> str:
    """The access line as the logging path writes it: a LogRecord through `formatter`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    access = logging.getLogger(logs.ACCESS_LOGGER)
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the loggers' cached decisions
    try:
        logs._log_access(*ARGS)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    return stream.getvalue()


def _direct(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, writer: logs.AccessLog) -> str:
    """The access line as the fast path writes it, through a LogOutput into a file."""
    with (tmp_path / "out.log").open("w") as stream:
        output = LogOutput(stream)
        handler = BufferedHandler(output)
        monkeypatch.setattr(logs, "output", output)
        monkeypatch.setattr(logs, "_handler", handler)  # as if setup_logging's handler were the root's only one
        monkeypatch.setattr(logs, "_root", logging.Logger("root-alone"))
        logs._root.addHandler(handler)
        writer(*ARGS)
        output.flush()
    return (tmp_path / "out.log").read_text()


@pytest.mark.parametrize("execution", [None, "0190c2a1-0000-7000-8000-000000000001"])
def test_the_json_access_line_holds_the_formatters_fields(monkeypatch, tmp_path, execution) -> None:
    logs.install_context_ids()
    token = logs.request_id.set(ARGS[-1])
    eid_token = logs.execution_id.set(execution)
    try:
        expected = json.loads(_through_formatter(logs.JSONFormatter()))
        line = _direct(monkeypatch, tmp_path, logs._json_access)
    finally:
        logs.execution_id.reset(eid_token)
        logs.request_id.reset(token)
    assert line.endswith("}\n") and line.count("\n") == 1
    got = json.loads(line)
    assert list(got) == list(expected)  # the same fields in the same order
    assert {k: v for k, v in got.items() if k != "time"} == {k: v for k, v in expected.items() if k != "time"}
    assert got["message"] == 'POST /api/orders/ü"x 201' and got["duration_ms"] == 0.413
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", got["time"])
    assert ("execution_id" in got) == (execution is not None)


def test_the_text_access_line_is_the_formatters_line(monkeypatch, tmp_path) -> None:
    logs.install_context_ids()
    token = logs.request_id.set(ARGS[-1])
    try:
        expected = _through_formatter(logs.TextFormatter())
        line = _direct(monkeypatch, tmp_path, logs._text_access)
    finally:
        logs.request_id.reset(token)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    assert re.match(stamp, line) and re.match(stamp, expected)
    assert (
        line[24:]
        == expected[24:]
        == (
            'INFO    workflow.http: POST /api/orders/ü"x 201 request_id=req-"1" status=201 route=/api/orders/{id} '
            "duration_ms=0.413 remote=127.0.0.1\n"
        )
    )


def test_lines_from_many_threads_arrive_whole_and_in_each_threads_order(tmp_path) -> None:
    with (tmp_path / "out.log").open("w") as stream:
        output = LogOutput(stream, interval=0.001, flush_bytes=512)
        output.start()

        def emit(n: int) -> None:
            for i in range(2000):
                output.write(f"thread {n} line {i} " + "x" * (i % 50) + "\n")

        threads = [threading.Thread(target=emit, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        output.flush()
    lines = (tmp_path / "out.log").read_text().splitlines()
    assert len(lines) == 8000 and output.dropped == 0
    for n in range(4):
        mine = [line for line in lines if line.startswith(f"thread {n} ")]
        assert mine == [f"thread {n} line {i} " + "x" * (i % 50) for i in range(2000)]


def test_a_stalled_reader_never_blocks_a_writer_and_drops_are_counted() -> None:
    read_end, write_end = os.pipe()  # nobody reads: the pipe fills at 64 KiB and the writer thread blocks
    try:
        with os.fdopen(write_end, "w", closefd=False) as stream:
            output = LogOutput(stream, interval=0.001, flush_bytes=1024, capacity=64 * 1024)
            output.start()
            line = "y" * 99 + "\n"
            for _ in range(5000):  # 500 KB: far more than the pipe and the buffer hold
                output.write(line)
            # The calls above returned: the writer is stuck in os.write, the buffer is full, the rest dropped.
            assert 0 < output.dropped < 5000
            handler = BufferedHandler(output)
            handler.setFormatter(logs.JSONFormatter())
            before = output.dropped
            handler.handle(logging.makeLogRecord({"msg": "lost", "levelno": logging.INFO, "levelname": "INFO"}))
            assert output.dropped == before + 1
            logs_metric = Metrics()
            original, logs.output = logs.output, output
            try:
                from prometheus_client import generate_latest

                text = generate_latest(logs_metric.registry).decode()
            finally:
                logs.output = original
            assert metric_value(text, "log_lines_dropped_total") == output.dropped
    finally:
        os.close(read_end)  # the blocked write fails (EPIPE) and the writer thread goes on
        os.close(write_end)


async def _serve(tmp_path: Path, **env_vars: str) -> tuple[asyncio.subprocess.Process, int]:
    config = tmp_path / "echo.yaml"
    config.write_text(
        'pipelines:\n  echo:\n    trigger: {type: http, config: {path: "/echo/{id}", method: POST}}\n'
        "    steps:\n      - {name: answer, type: step.json_response, config: {status: 201}}\n"
    )
    proc, port, _ = await start_server_process(config, tmp_path, WORKFLOW_ISOLATE_COMPONENTS="false", **env_vars)
    return proc, port


async def _run(tmp_path: Path, requests: int, **env_vars: str) -> list[dict]:
    """Serve `requests` POSTs, stop with SIGTERM, and return every JSON log line the process wrote."""
    proc, port = await _serve(tmp_path, **env_vars)
    async with aiohttp.ClientSession() as session:
        for i in range(requests):
            headers = {"X-Request-ID": f"r-{i}"}
            async with session.post(f"http://127.0.0.1:{port}/echo/{i}", json={}, headers=headers) as response:
                assert response.status == 201
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in err.decode().splitlines()]


async def test_the_server_logs_one_line_per_request_and_writes_them_all_out_at_shutdown(tmp_path) -> None:
    lines = await _run(tmp_path, 300)
    access = [line for line in lines if line["logger"] == "workflow.http" and line["route"] == "/echo/{id}"]
    assert [line["request_id"] for line in access] == [f"r-{i}" for i in range(300)]
    assert {k: v for k, v in access[7].items() if k not in ("time", "duration_ms")} == {
        "level": "info",
        "logger": "workflow.http",
        "message": "POST /echo/7 201",
        "request_id": "r-7",
        "status": 201,
        "route": "/echo/{id}",
        "remote": "127.0.0.1",
    }
    assert lines[-1]["message"].startswith("stopped after")  # the last line, written at exit


async def test_the_access_log_can_be_turned_off(tmp_path) -> None:
    lines = await _run(tmp_path, 20, WORKFLOW_ACCESS_LOG="false")
    assert [line for line in lines if line["logger"] == "workflow.http"] == []
    assert lines[-1]["message"].startswith("stopped after")  # other info lines are still written


def test_the_direct_line_gives_way_to_a_record_when_another_handler_listens(tmp_path) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logs.output, logs._handler, logs.access
    token = logs.request_id.set(ARGS[-1])  # as the middleware sets it
    try:
        with (tmp_path / "out.log").open("w") as stream:
            output = logs.setup_logging("json", "INFO", stream=stream)
            logs.access(*ARGS)  # setup_logging's handler alone: the direct line
            records: list[logging.LogRecord] = []
            listener = logging.Handler()
            listener.emit = records.append  # type: ignore[method-assign]
            root.addHandler(listener)  # as pytest's caplog does
            logs.access(*ARGS)
            root.removeHandler(listener)
            output.flush()
        lines = [json.loads(line) for line in (tmp_path / "out.log").read_text().splitlines()]
        assert [line["logger"] for line in lines] == ["workflow.http", "workflow.http"]  # the record reached both
        assert [(r.name, r.getMessage(), r.status, r.route) for r in records] == [
            ("workflow.http", 'POST /api/orders/ü"x 201', 201, "/api/orders/{id}")
        ]
        assert {k: v for k, v in lines[0].items() if k != "time"} == {k: v for k, v in lines[1].items() if k != "time"}
    finally:
        logs.request_id.reset(token)
        output.close()
        root.handlers[:], root.level = saved[0], saved[1]
        logs.output, logs._handler, logs.access = saved[2], saved[3], saved[4]
