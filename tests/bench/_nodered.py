"""Node-RED 4 as a peer in bench_throughput.py: installed with npm into a cache folder on first use.

The flow is the usual Node-RED shape of the benchmark's pipeline: `http in` (POST /bench) -> `function`
(the same checks as the schema: `customer_id` a string and `total` a number, else 400; then the answer
with the customer lower-cased) -> `http response` (status from msg.statusCode, 201). GET /readyz answers
200 for the readiness poll. The editor and admin API are off, logging at warn.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import _common as c

VERSION = "4"  # npm's `node-red@4`: the newest 4.x
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "workflow-bench" / "node-red4"

FUNCTION = """\
const b = msg.payload;
if (b === null || typeof b !== "object" || typeof b.customer_id !== "string" || typeof b.total !== "number") {
    msg.statusCode = 400;
    msg.payload = {error: "customer_id (string) and total (number) are required"};
    return msg;
}
msg.statusCode = 201;
msg.payload = {status: "pending", total: b.total, customer: b.customer_id.toLowerCase()};
return msg;
"""

FLOW = [
    {"id": "bench-tab", "type": "tab", "label": "bench"},
    {"id": "in", "type": "http in", "z": "bench-tab", "url": "/bench", "method": "post", "wires": [["fn"]]},
    {"id": "fn", "type": "function", "z": "bench-tab", "func": FUNCTION, "outputs": 1, "wires": [["out"]]},
    {"id": "out", "type": "http response", "z": "bench-tab", "statusCode": "", "headers": {}, "wires": []},
    {"id": "ready", "type": "http in", "z": "bench-tab", "url": "/readyz", "method": "get", "wires": [["ok"]]},
    {
        "id": "ok",
        "type": "function",
        "z": "bench-tab",
        "func": 'msg.payload = {status: "ok"}; return msg;',
        "outputs": 1,
        "wires": [["out"]],
    },
]

SETTINGS = """\
module.exports = {{
    uiHost: "{host}",
    uiPort: {port},
    userDir: {user_dir},
    flowFile: "flows.json",
    httpAdminRoot: false,
    credentialSecret: false,
    diagnostics: {{enabled: false, ui: false}},
    telemetry: {{enabled: false}},
    logging: {{console: {{level: "warn", metrics: false, audit: false}}}},
}};
"""


def install(cache: Path = CACHE) -> Path:
    """The path of Node-RED's red.js, installing `node-red@4` into `cache` with npm when it is not there."""
    red = cache / "node_modules" / "node-red" / "red.js"
    if red.exists():
        return red
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise c.BenchError("Node-RED needs node and npm (or pass --skip-node-red)")
    cache.mkdir(parents=True, exist_ok=True)
    print(f"  installing node-red@{VERSION} into {cache} (first use only)")
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(cache), f"node-red@{VERSION}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not red.exists():
        raise c.BenchError(f"npm install node-red@{VERSION} failed:\n{done.stderr[-2000:]}")
    return red


def version(red: Path) -> str:
    """The installed Node-RED's version and the node it runs on."""
    package = json.loads((red.parent / "package.json").read_text())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return f"node-red {package['version']} on node {node}"


def command(red: Path, tmp: Path, port: int) -> list[str]:
    """Write the user dir (settings and flow) under `tmp` and return the command that serves it on `port`."""
    user_dir = tmp / "node-red"
    user_dir.mkdir(parents=True, exist_ok=True)
    (user_dir / "flows.json").write_text(json.dumps(FLOW, indent=1))
    settings = user_dir / "settings.js"
    settings.write_text(SETTINGS.format(host=c.HOST, port=port, user_dir=json.dumps(str(user_dir))))
    return ["node", str(red), "--settings", str(settings), "--userDir", str(user_dir)]
