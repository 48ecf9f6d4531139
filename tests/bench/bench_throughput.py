"""Throughput as users run it: the shipped configuration against a bare aiohttp handler and Node-RED 4.

    .venv/bin/python tests/bench/bench_throughput.py [--duration 4] [--rounds 3] [--connections 32]

Starts these servers as subprocesses on 127.0.0.1, each one process:
  bare            tests/bench/bare_server.py: parse JSON, jsonschema-validate, build the answer, 201
  default         workflow-server as shipped: JSON access log at info (to its log file), every execution
                  recorded to SQLite, metrics on; one pipeline (step.validate -> step.set -> step.json_response)
  stripped        the same with WORKFLOW_LOG_LEVEL=warning and WORKFLOW_RECORD_EXECUTIONS=false
  node-red        Node-RED 4, http in -> function -> http response doing the same checks and answer
                  (npm-installed into a cache folder on first use; --skip-node-red leaves it out)
  default-pg      with --postgres: the default configuration recording to PostgreSQL (WORKFLOW_DB_*)
warms each up, then loads them alternately with wrk (POST /bench, JSON body) for --rounds rounds,
unpinned unless --pin, and prints req/s per round, the medians, the ratios, wrk's p50/p99 latency and
non-2xx counts, checks /metrics of the workflow servers, and prints one TARGET MET / TARGET MISSED line
per target: default >= 0.5x bare and >= 2x Node-RED, stripped >= 0.65x bare.

Exit code: 0 when everything ran (whether or not the targets were met); 1 when something failed
(a server did not start, wrong answers, non-2xx responses or socket errors, metrics missing);
2 for bad arguments or a missing wrk.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import _common as c
import _nodered

BUSY_CPU = 0.9  # a saturated single-process server uses ~100% of its CPU; less means something else took it
PIPELINE_NAME = "bench"
PATH = "/bench"
REQUEST = {"customer_id": "C-42", "total": 19.9}
EXPECTED = {"status": "pending", "total": 19.9, "customer": "c-42"}
# Keep in step with SCHEMA in bare_server.py.
SCHEMA = {
    "type": "object",
    "required": ["customer_id", "total"],
    "properties": {"customer_id": {"type": "string"}, "total": {"type": "number"}},
}
CONFIG = f"""\
# written by tests/bench/bench_throughput.py
name: throughput-bench
pipelines:
  {PIPELINE_NAME}:
    trigger:
      type: http
      config: {{path: {PATH}, method: POST}}
    steps:
      - name: validate
        type: step.validate
        config:
          strategy: json_schema
          schema: {json.dumps(SCHEMA)}
      - name: set
        type: step.set
        config:
          values:
            status: pending
            total: "{{{{ .total }}}}"
            customer: "{{{{ .customer_id | lower }}}}"
      - name: respond
        type: step.json_response
        config:
          status: 201
          body:
            status: "{{{{ .status }}}}"
            total: "{{{{ .total }}}}"
            customer: "{{{{ .customer }}}}"
"""


@dataclass
class Target:
    """One server under test and its measurements."""

    name: str
    server: c.ServerProcess
    base_url: str
    ready_path: str
    results: list[c.WrkResult] = field(default_factory=list)
    warmup_requests: int = 0

    @property
    def url(self) -> str:
        return self.base_url + PATH

    def median_rps(self) -> float:
        return c.median([r.rps for r in self.results])

    def median_p50(self) -> float | None:
        values = [r.p50_ms for r in self.results if r.p50_ms is not None]
        return c.median(values) if values else None

    def median_p99(self) -> float | None:
        values = [r.p99_ms for r in self.results if r.p99_ms is not None]
        return c.median(values) if values else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Throughput as users run it: default, stripped, bare, Node-RED.")
    parser.add_argument("--duration", type=int, default=4, help="whole seconds of load per measurement (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="whole seconds of load per server before measuring (default 2)"
    )
    parser.add_argument("--skip-node-red", action="store_true", help="do not measure Node-RED")
    parser.add_argument(
        "--node-red-cache", type=Path, default=_nodered.CACHE, help=f"npm prefix of Node-RED (default {_nodered.CACHE})"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also measure the default configuration recording to PostgreSQL (WORKFLOW_DB_HOST/NAME/USER)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also measure the default configuration of another source tree, e.g. an export of main: "
        "`git archive main | tar -x -C DIR` (run as `python -m server` there, on this venv)",
    )
    parser.add_argument("--pin", action="store_true", help="pin the servers to the first CPU and wrk to the second")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (config, lua, server logs)")
    ns = parser.parse_args(argv)
    if ns.duration <= 0 or ns.rounds < 1 or ns.connections < 1 or ns.threads < 1 or ns.warmup < 0:
        parser.error("--duration, --rounds, --connections and --threads must be positive, --warmup >= 0")
    if ns.connections < ns.threads:
        parser.error("--connections must be at least --threads")
    return ns


# What each workflow-server target changes from the shipped defaults.
VARIANTS = {
    "default": {},
    "stripped": {"WORKFLOW_LOG_LEVEL": "warning", "WORKFLOW_RECORD_EXECUTIONS": "false"},
    "default-pg": {},
    "baseline": {},  # --baseline: the default configuration of another source tree
}


def start_targets(ns: argparse.Namespace, tmp: Path, server_cpus: str | None) -> list[Target]:
    """Build the servers (not started yet)."""
    config = tmp / "bench.yaml"
    config.write_text(CONFIG)
    targets = []

    port = c.free_port()
    bare_cmd = c.pinned(
        [sys.executable, str(c.HERE / "bare_server.py"), "--host", c.HOST, "--port", str(port)], server_cpus
    )
    bare = c.ServerProcess("bare", bare_cmd, c.child_env(), tmp / "bare.log", cwd=c.ROOT)
    targets.append(Target("bare", bare, f"http://{c.HOST}:{port}", "/readyz"))

    for name in ("default", "stripped", *(("default-pg",) if ns.postgres else ())):
        targets.append(workflow_server(name, tmp, config, server_cpus))
    if ns.baseline:
        targets.append(workflow_server("baseline", tmp, config, server_cpus, ns.baseline.resolve()))
    if not ns.skip_node_red:
        red = _nodered.install(ns.node_red_cache)
        port = c.free_port()
        cmd = c.pinned(_nodered.command(red, tmp, port), server_cpus)
        server = c.ServerProcess("node-red", cmd, c.child_env(), tmp / "node-red.log", cwd=c.ROOT)
        targets.append(Target("node-red", server, f"http://{c.HOST}:{port}", "/readyz"))
    return targets


def workflow_server(
    name: str, tmp: Path, config: Path, server_cpus: str | None, checkout: Path | None = None
) -> Target:
    """One workflow-server target: the shipped defaults with VARIANTS[name], in its own state folder.

    With `checkout`, the server package of that source tree (`python -m server` run there), on this venv.
    """
    port, admin = c.free_port(), c.free_port()
    while admin == port:
        admin = c.free_port()
    state = tmp / name
    (state / "components").mkdir(parents=True)
    env = c.child_env(
        {
            **VARIANTS[name],
            "WORKFLOW_LOG_FORMAT": "json",
            "WORKFLOW_COMPONENTS_DIR": str(state / "components"),
            "WORKFLOW_DATA_DIR": str(state / "data"),
            "WORKFLOW_SHUTDOWN_TIMEOUT": "5s",
        }
    )
    for var in (
        "WORKFLOW_CONFIG",
        "WORKFLOW_ADDR",
        "WORKFLOW_ADMIN_ADDR",
        "WORKFLOW_REDIS_ADDR",
        "WORKFLOW_LOG_LEVEL",
        "WORKFLOW_RECORD_EXECUTIONS",
        "WORKFLOW_ACCESS_LOG",
        "JWT_SECRET",
        *(() if name == "default-pg" else ("WORKFLOW_DB_HOST",)),
    ):
        if var not in VARIANTS[name]:
            env.pop(var, None)
    program = [sys.executable, "-m", "server"] if checkout else [c.venv_script("workflow-server")]
    cmd = c.pinned(
        [
            *program,
            "-config",
            str(config),
            "--addr",
            f"{c.HOST}:{port}",
            "--admin-addr",
            f"{c.HOST}:{admin}",
        ],
        server_cpus,
    )
    server = c.ServerProcess(name, cmd, env, tmp / f"{name}.log", cwd=checkout or c.ROOT)
    return Target(name, server, f"http://{c.HOST}:{port}", "/readyz")


def check_answer(target: Target) -> None:
    """One request by hand: 201 and exactly the expected body, so both sides do the same work."""
    status, text = c.http_post_json(target.url, json.dumps(REQUEST).encode())
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    if status != 201 or body != EXPECTED:
        raise c.BenchError(f"{target.name}: POST {PATH} answered {status} {text!r}; expected 201 {EXPECTED}")


def check_load(target: Target, result: c.WrkResult, what: str) -> None:
    if result.non2xx:
        raise c.BenchError(f"{target.name} ({what}): wrk saw {result.non2xx} Non-2xx or 3xx responses\n{result.raw}")
    if result.errors:
        raise c.BenchError(f"{target.name} ({what}): wrk saw socket errors {result.socket_errors}\n{result.raw}")
    if result.requests == 0:
        raise c.BenchError(f"{target.name} ({what}): wrk completed no requests\n{result.raw}")


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float, str]]:
    """(labels, value, raw line) of every sample of `name` in Prometheus text."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group("name") == name:
            out.append((dict(_LABEL.findall(m.group("labels") or "")), float(m.group("value")), line))
    return out


def check_metrics(target: Target) -> list[str]:
    """/metrics must count POST /bench (status 201) at least as often as wrk saw answers."""
    status, text = c.http_get(target.base_url + "/metrics")
    if status != 200:
        raise c.BenchError(f"{target.name}: GET /metrics answered {status}")
    samples = [s for s in metric_samples(text, "http_requests_total") if s[0].get("path") == PATH]
    if not samples:
        raise c.BenchError(f'{target.name}: /metrics has no http_requests_total{{path="{PATH}"}} sample')
    executions = [s for s in metric_samples(text, "workflow_executions_total") if s[0].get("action") == PIPELINE_NAME]
    lines = [raw for _, _, raw in samples + executions]
    counted = sum(value for labels, value, _ in samples if labels.get("status_code") == "201")
    seen = sum(r.requests for r in target.results) + target.warmup_requests + 1
    lines.append(f"(201s counted by the server: {counted:.0f}; completed as seen by wrk, +1 check request: {seen})")
    if counted < seen:
        raise c.BenchError(f"{target.name}: /metrics counted {counted:.0f} answers with 201, wrk saw {seen}")
    return lines


def print_table(targets: list[Target], rounds: int) -> None:
    header = (
        f"{'round':<7}{'server':<15}{'req/s':>11}{'p50':>10}{'p99':>10}{'requests':>10}{'non-2xx':>9}"
        f"{'errors':>8}{'srv cpu':>9}"
    )
    print(header)
    print("-" * len(header))
    for i in range(rounds):
        for t in targets:
            r = t.results[i]
            print(
                f"{i + 1:<7}{t.name:<15}{r.rps:>11.1f}{c.fmt_ms(r.p50_ms):>10}{c.fmt_ms(r.p99_ms):>10}"
                f"{r.requests:>10}{r.non2xx:>9}{r.errors:>8}{r.server_cpu:>9.0%}"
            )
    print("-" * len(header))
    for t in targets:
        print(
            f"{'median':<7}{t.name:<15}{t.median_rps():>11.1f}{c.fmt_ms(t.median_p50()):>10}"
            f"{c.fmt_ms(t.median_p99()):>10}"
        )


def run(ns: argparse.Namespace, tmp: Path) -> int:
    server_cpus, load_cpus = c.cpu_plan(ns.pin)
    lua = c.write_post_lua(tmp / "post.lua", json.dumps(REQUEST, separators=(",", ":")))
    targets = start_targets(ns, tmp, server_cpus)

    print("== machine")
    for line in c.machine_lines():
        print("  " + line)
    print("== command")
    print("  " + shlex.join([sys.executable, *sys.argv]))
    print(f"  pinning: {'servers on CPU ' + server_cpus + ', wrk on CPU ' + load_cpus if server_cpus else 'off'}")
    if not ns.skip_node_red:
        red = ns.node_red_cache / "node_modules" / "node-red" / "red.js"
        print(f"  {_nodered.version(red)}; flow: http in -> function -> http response")
    for t in targets:
        print(f"  {t.name}: {shlex.join(t.server.cmd)}")
    for t in targets:
        env = {k: v for k, v in t.server.env.items() if k in ("WORKFLOW_LOG_FORMAT", *VARIANTS.get(t.name, {}))}
        if env:
            print(f"  {t.name} env: {' '.join(f'{k}={v}' for k, v in sorted(env.items()))}")
    print(
        "  wrk:",
        shlex.join(
            c.wrk_command(
                targets[0].url,
                duration=ns.duration,
                connections=ns.connections,
                threads=ns.threads,
                script=lua,
                cpus=load_cpus,
            )
        ),
    )
    print(f"  body: {json.dumps(REQUEST, separators=(',', ':'))}  (post.lua sets Content-Type: application/json)")
    print("== pipeline config")
    print("  " + CONFIG.rstrip().replace("\n", "\n  "))
    sys.stdout.flush()

    try:
        for t in targets:
            t.server.start()
        for t in targets:
            t.server.wait_ready(t.base_url + t.ready_path)
            check_answer(t)
        print(f"== warm-up: {ns.warmup:g}s per server")
        for t in targets:
            if ns.warmup > 0:
                r = c.run_wrk(
                    c.wrk_command(
                        t.url,
                        duration=ns.warmup,
                        connections=ns.connections,
                        threads=ns.threads,
                        script=lua,
                        cpus=load_cpus,
                    ),
                    ns.warmup,
                )
                check_load(t, r, "warm-up")
                t.warmup_requests = r.requests
                print(f"  {t.name:<15}{r.rps:>11.1f} req/s")
        print(f"== measuring: {ns.rounds} rounds x {len(targets)} servers x {ns.duration:g}s, alternating")
        sys.stdout.flush()
        for i in range(ns.rounds):
            for t in targets:
                cpu_before = c.cpu_seconds(t.server.proc.pid)
                r = c.run_wrk(
                    c.wrk_command(
                        t.url,
                        duration=ns.duration,
                        connections=ns.connections,
                        threads=ns.threads,
                        script=lua,
                        cpus=load_cpus,
                    ),
                    ns.duration,
                )
                r.server_cpu = (c.cpu_seconds(t.server.proc.pid) - cpu_before) / (r.seconds or ns.duration)
                check_load(t, r, f"round {i + 1}")
                t.results.append(r)
                print(
                    f"  round {i + 1} {t.name:<15}{r.rps:>11.1f} req/s  p50 {c.fmt_ms(r.p50_ms)}  "
                    f"p99 {c.fmt_ms(r.p99_ms)}  server cpu {r.server_cpu:.0%}"
                )
                sys.stdout.flush()
        metric_lines = {t.name: check_metrics(t) for t in targets if t.name in VARIANTS}
    finally:
        for t in targets:
            t.server.stop()

    print("== results")
    print_table(targets, ns.rounds)
    starved = [
        (t.name, i + 1, r.server_cpu) for t in targets for i, r in enumerate(t.results) if r.server_cpu < BUSY_CPU
    ]
    load = c.loadavg_text()
    print(f"(srv cpu: the share of one CPU the server process used during the run; loadavg now {load})")
    if starved:
        print(
            f"WARNING: the machine was busy: {len(starved)} run(s) got less than {BUSY_CPU:.0%} of a CPU "
            f"for the server ({', '.join(f'{n} round {i} {cpu:.0%}' for n, i, cpu in starved)}); "
            "the figures are perturbed; rerun on an idle machine"
        )
    by_name = {t.name: t for t in targets}
    bare = by_name["bare"]
    print()
    for t in targets:
        line = f"{t.name:<12} {t.median_rps():>10.1f} req/s (median)   /bare = {t.median_rps() / bare.median_rps():.3f}"
        if "node-red" in by_name and t.name != "node-red":
            line += f"   /node-red = {t.median_rps() / by_name['node-red'].median_rps():.2f}"
        if t.name in ("default", "default-pg", "baseline"):
            line += f"   ({t.server.log_lines()} log lines written)"
        print(line)
    print()
    print("== /metrics (main listener)")
    for name, lines in metric_lines.items():
        print(f"  {name}:")
        for line in lines:
            print(f"    {line}")
    print()
    how = f"unpinned, wrk -t{ns.threads} -c{ns.connections}" if not server_cpus else "pinned"
    how += f", median of {ns.rounds} x {ns.duration}s, alternating"
    if "baseline" in by_name:
        gain = by_name["default"].median_rps() / by_name["baseline"].median_rps()
        print(f"default/baseline = {gain:.3f} (this tree against {ns.baseline}, both as shipped)")
    checks = [("default", "bare", 0.5), ("stripped", "bare", 0.65), ("default-pg", "bare", 0.5)]
    checks.insert(1, ("default", "node-red", 2.0))
    for subject, against, target in checks:
        if subject in by_name and against in by_name:
            ratio = by_name[subject].median_rps() / by_name[against].median_rps()
            verdict = "TARGET MET" if ratio >= target else "TARGET MISSED"
            sign = ">=" if ratio >= target else "<"
            print(f"{verdict}: {subject}/{against} = {ratio:.3f} {sign} {target:g} ({how})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    try:
        c.wrk_binary()
    except c.BenchError as exc:
        print(f"bench_throughput: {exc}", file=sys.stderr)
        return 2
    return c.run_in_temp("bench-throughput-", ns.keep_temp, lambda tmp: run(ns, tmp))


if __name__ == "__main__":
    sys.exit(main())
