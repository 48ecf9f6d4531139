"""The baseline for bench_throughput.py: a bare aiohttp app doing the pipeline's work by hand.

POST /bench parses the JSON body, validates it against the same JSON schema (a validator compiled
once, at import), builds the same answer (customer lower-cased) and returns it with 201. No
middlewares, no metrics, no logging: the cheapest honest aiohttp handler for the job.

    python tests/bench/bare_server.py --port 8090 [--loop uvloop|asyncio]   # GET /readyz: 200 once it listens

It runs on the loop workflow-server picks by default (uvloop when installed), so both are measured on the
same loop; `--loop asyncio` forces asyncio's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import jsonschema
from aiohttp import web

from server.eventloop import loop_factory  # the same choice of loop as workflow-server's

# Keep in step with SCHEMA in bench_throughput.py (which writes it into the pipeline's YAML).
SCHEMA = {
    "type": "object",
    "required": ["customer_id", "total"],
    "properties": {"customer_id": {"type": "string"}, "total": {"type": "number"}},
}
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


async def bench(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        return web.json_response({"error": f"request body is not valid JSON: {exc}"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "request body must be a JSON object"}, status=400)
    error = jsonschema.exceptions.best_match(VALIDATOR.iter_errors(body))
    if error is not None:
        return web.json_response({"error": error.message}, status=400)
    answer = {"status": "pending", "total": body["total"], "customer": body["customer_id"].lower()}
    return web.json_response(answer, status=201)


async def readyz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/bench", bench)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    ns = parser.parse_args()
    factory, name = loop_factory(ns.loop)
    print(f"bare_server: event loop {name}", flush=True)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(ns.host, ns.port))


if __name__ == "__main__":
    main()
