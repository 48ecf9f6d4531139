"""Hot-reload benchmarks: reload latency, a reload storm under load, scale to 500 components, memory.

    .venv/bin/python tests/bench/bench_reload.py [latency|storm|scale|memory|all] [options]

Each part starts the real `workflow-server` as a subprocess on free 127.0.0.1 ports, with its own temp
components folder, data folder and config, drives it for a bounded time, stops it, and prints its
figures and one `TARGET MET` / `TARGET MISSED` line per target. The component under test is one `.py`
file whose step returns `{"version": N}`; every save writes a new N, so a client can tell which version
answered. See tests/bench/README.md for what each part measures and prints.

Exit code: 0 when everything ran, whether or not the targets were met; 1 when something failed to run
(a server did not start or answered wrongly, wrk failed, a figure could not be read), with
`BENCHMARK FAILED: ...` on stderr and the temp dir kept; 2 for bad arguments or a missing wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import _common as c
import aiohttp

PARTS = ("latency", "storm", "scale", "memory")
BUSY_CPU = 0.9
STEP = "step.bench_version"
COMPONENT_ID = "bench_version"

COMPONENT = '''\
"""Benchmark component {cid}, version {version} (written by tests/bench/bench_reload.py)."""

from server import hookimpl

VERSION = {version}


def describe(data):
    """A little more code than the bare minimum, like a real component."""
    return {{"version": VERSION, "keys": len(data)}}


async def version_step(ctx):
    """Answer with this file's version number."""
    return {{"version": describe(ctx.data)["version"]}}


@hookimpl
def register_steps(register):
    register("{step}", version_step, description="bench: returns VERSION")
'''

# A broken save: the same file with a syntax error at the end (it still names a version, so a
# response from it, if one ever got through, would be recognised).
BROKEN_TAIL = "\n\ndef broken(:\n    pass\n"

CONFIG = """\
# written by tests/bench/bench_reload.py
name: reload-bench
pipelines:
  version:
    trigger:
      type: http
      config: {{path: /version, method: GET}}
    steps:
      - name: version
        type: {step}
      - name: mark
        type: step.set
        config:
          values:
            served_by: "bench"
"""
PATH = "/version"


def component_text(version: int, *, cid: str = COMPONENT_ID, step: str = STEP, broken: bool = False) -> str:
    return COMPONENT.format(cid=cid, version=version, step=step) + (BROKEN_TAIL if broken else "")


# --------------------------------------------------------------------------- servers


@dataclass
class Bench:
    """One server under test: its folders, ports and process."""

    name: str
    state: Path
    port: int
    admin: int
    server: c.ServerProcess
    started_at: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://{c.HOST}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + PATH

    @property
    def components(self) -> Path:
        return self.state / "components"

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def start(self, timeout: float = 60.0) -> float:
        """Start the process and wait for /readyz 200; return the seconds that took."""
        self.started_at = time.perf_counter()
        self.server.start()
        wait_ready_fast(self.server, self.base_url + "/readyz", timeout)
        return time.perf_counter() - self.started_at

    def metrics(self) -> str:
        status, text = c.http_get(self.base_url + "/metrics")
        if status != 200:
            raise c.BenchError(f"{self.name}: GET /metrics answered {status}")
        return text


def wait_ready_fast(server: c.ServerProcess, url: str, timeout: float) -> None:
    """Like ServerProcess.wait_ready, polling every 10 ms so start-up times are measured to ~10 ms."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise c.BenchError(
                f"{server.name} exited with {server.proc.returncode} before it was ready\n{server.log_tail()}"
            )
        try:
            status, _ = c.http_get(url, timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.01)
    raise c.BenchError(f"{server.name} not ready at {url} after {timeout:.0f}s ({last})\n{server.log_tail()}")


def make_bench(
    name: str, tmp: Path, ns: argparse.Namespace, server_cpus: str | None, components: dict[str, str], config: str
) -> Bench:
    """Folders, config and component files for one server (not started)."""
    state = tmp / name
    (state / "components").mkdir(parents=True)
    (state / "data").mkdir()
    (state / "bench.yaml").write_text(config)
    for cid, text in components.items():
        (state / "components" / f"{cid}.py").write_text(text)
    port, admin = c.free_port(), c.free_port()
    while admin == port:
        admin = c.free_port()
    env = {k: v for k, v in c.child_env().items() if not k.startswith(("WORKFLOW_", "JWT_"))}
    env.update(
        {
            "WORKFLOW_LOG_LEVEL": ns.log_level,
            "WORKFLOW_LOG_FORMAT": "json",
            "WORKFLOW_COMPONENTS_DIR": str(state / "components"),
            "WORKFLOW_DATA_DIR": str(state / "data"),
            "WORKFLOW_SHUTDOWN_TIMEOUT": "5s",
        }
    )
    if ns.debounce:
        env["WORKFLOW_COMPONENTS_DEBOUNCE"] = ns.debounce
    cmd = c.pinned(
        [
            c.venv_script("workflow-server"),
            "-config",
            str(state / "bench.yaml"),
            "--addr",
            f"{c.HOST}:{port}",
            "--admin-addr",
            f"{c.HOST}:{admin}",
        ],
        server_cpus,
    )
    return Bench(name, state, port, admin, c.ServerProcess(name, cmd, env, tmp / f"{name}.log", cwd=c.ROOT))


def describe_bench(bench: Bench) -> None:
    env = {k: v for k, v in bench.server.env.items() if k.startswith("WORKFLOW_")}
    print(
        f"  {bench.name}: {' '.join(f'{k}={shlex.quote(v)}' for k, v in sorted(env.items()))} "
        f"{shlex.join(bench.server.cmd)}"
    )


def reload_metrics(text: str) -> dict[str, float]:
    """The component figures of /metrics: gauge, reload/load/file_change counts, reload histogram."""
    out: dict[str, float] = {}
    for labels, value, _ in c.prometheus_samples(text, "module_operations_total"):
        if labels.get("module") == "dynamic":
            out[f"{labels.get('operation')}/{labels.get('status')}"] = value
    for name in (
        "dynamic_components",
        "dynamic_component_reload_seconds_count",
        "dynamic_component_reload_seconds_sum",
    ):
        samples = c.prometheus_samples(text, name)
        if samples:
            out[name] = samples[0][1]
    for labels, value, _ in c.prometheus_samples(text, "python_gc_collections_total"):
        out[f"gc{labels.get('generation')}"] = value
    return out


def metric_lines(text: str) -> list[str]:
    """The raw /metrics lines that prove what the component machinery did."""
    lines = [
        raw
        for labels, _, raw in c.prometheus_samples(text, "module_operations_total")
        if labels.get("module") == "dynamic"
    ]
    for name in (
        "dynamic_components",
        "dynamic_component_reload_seconds_count",
        "dynamic_component_reload_seconds_sum",
    ):
        lines += [raw for _, _, raw in c.prometheus_samples(text, name)]
    return lines


# --------------------------------------------------------------------------- client


class Client:
    """One keep-alive connection polling GET /version; answers (status, version or None)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.errors = 0

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def get(self) -> tuple[int, int | None]:
        assert self.session is not None
        self.requests += 1
        try:
            async with self.session.get(self.url) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.errors += 1
            return 0, None
        try:
            version = json.loads(raw).get("version")
        except (ValueError, AttributeError):
            version = None
        return status, version if isinstance(version, int) else None

    async def wait_for(self, version: int, timeout: float, interval: float = 0.0) -> tuple[float | None, int]:
        """Poll until the body shows `version`; (perf_counter when seen or None on timeout, polls made)."""
        deadline = time.perf_counter() + timeout
        polls = 0
        while time.perf_counter() < deadline:
            status, seen = await self.get()
            polls += 1
            if status == 200 and seen == version:
                return time.perf_counter(), polls
            if interval:
                await asyncio.sleep(interval)
        return None, polls


async def save_and_wait(
    bench: Bench, client: Client, version: int, ns: argparse.Namespace, interval: float = 0.0
) -> tuple[float | None, int]:
    """Write a new version of the component and measure write -> first response from it (seconds)."""
    path = bench.components / f"{COMPONENT_ID}.py"
    text = component_text(version)
    t0 = time.perf_counter()
    c.write_text(path, text, atomic=ns.write_mode == "atomic")
    seen, polls = await client.wait_for(version, ns.save_timeout, interval)
    return (None if seen is None else seen - t0), polls


def latency_summary(values: list[float]) -> str:
    return (
        f"p50 {c.percentile(values, 50) * 1000:.1f} ms  p90 {c.percentile(values, 90) * 1000:.1f} ms  "
        f"p99 {c.percentile(values, 99) * 1000:.1f} ms  max {max(values) * 1000:.1f} ms  "
        f"min {min(values) * 1000:.1f} ms  mean {sum(values) / len(values) * 1000:.1f} ms"
    )


def verdict(ok: bool, text: str) -> str:
    return f"{'TARGET MET' if ok else 'TARGET MISSED'}: {text}"


# --------------------------------------------------------------------------- 1. latency


async def run_latency(ns: argparse.Namespace, tmp: Path, cpus: tuple[str | None, str | None]) -> list[str]:
    print("\n######## 1. latency: file write -> first response served by the new version")
    bench = make_bench("latency", tmp, ns, cpus[0], {COMPONENT_ID: component_text(1)}, CONFIG.format(step=STEP))
    describe_bench(bench)
    print(
        f"  {ns.saves} saves ({ns.write_mode} writes), each followed by GET {PATH} in a tight loop on one "
        f"keep-alive connection until the body shows the new version; {ns.gap * 1000:.0f} ms pause after each; "
        f"a save not served within {ns.save_timeout:g}s counts as a timeout"
    )
    print(f"  loadavg before: {c.loadavg_text()}")
    sys.stdout.flush()
    latencies: list[float] = []
    timeouts = 0
    polls_total = 0
    try:
        bench.start()
        async with Client(bench.url) as client:
            seen, _ = await client.wait_for(1, 5.0)
            if seen is None:
                raise c.BenchError(f"latency: GET {PATH} never answered version 1\n{bench.server.log_tail()}")
            before = reload_metrics(bench.metrics())
            cpu0 = c.cpu_seconds(bench.pid)
            t_start = time.perf_counter()
            for i in range(ns.saves):
                latency, polls = await save_and_wait(bench, client, i + 2, ns)
                polls_total += polls
                if latency is None:
                    timeouts += 1
                else:
                    latencies.append(latency)
                await asyncio.sleep(ns.gap)
            wall = time.perf_counter() - t_start
            cpu = c.cpu_seconds(bench.pid) - cpu0
            errors = client.errors
        text = bench.metrics()
    finally:
        bench.server.stop()
    after = reload_metrics(text)
    if not latencies:
        raise c.BenchError("latency: no save was ever served")
    hist_n, hist_s = (
        after.get(k, 0) - before.get(k, 0)
        for k in ("dynamic_component_reload_seconds_count", "dynamic_component_reload_seconds_sum")
    )
    reloads = after.get("reload/success", 0) - before.get("reload/success", 0)
    print("== results (latency)")
    print(
        f"  saves: {ns.saves}  served: {len(latencies)}  timeouts: {timeouts}  client errors: {errors}  "
        f"polls: {polls_total} ({polls_total / max(1, ns.saves):.0f} per save)"
    )
    print(f"  write -> new version served: {latency_summary(latencies)}")
    print(
        f"  server-side (dynamic_component_reload_seconds, change seen -> swapped): {hist_n:.0f} reloads, "
        f"mean {hist_s / hist_n * 1000 if hist_n else float('nan'):.1f} ms"
    )
    print(f"  reloads counted by the server: {reloads:.0f} (module_operations_total reload/success)")
    print(f"  server cpu during the saves: {cpu / wall:.0%} of one CPU; loadavg after: {c.loadavg_text()}")
    for line in metric_lines(text):
        print(f"    {line}")
    p50, p99 = c.percentile(latencies, 50) * 1000, c.percentile(latencies, 99) * 1000
    ok = p50 <= ns.target_p50 and p99 <= ns.target_p99 and timeouts == 0
    return [
        verdict(
            ok,
            f"reload latency p50 {p50:.1f} ms (<= {ns.target_p50:g}), p99 {p99:.1f} ms "
            f"(<= {ns.target_p99:g}), {timeouts} timeouts, over {ns.saves} saves",
        )
    ]


# --------------------------------------------------------------------------- 2. storm


@dataclass
class StormRun:
    kind: str  # "steady" or "storm"
    wrk: c.WrkResult
    samples: list[tuple[float, int, int | None]] = field(default_factory=list)  # (t, status, version)
    writes: list[tuple[float, int, bool]] = field(default_factory=list)  # (t, version, broken)
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)


async def run_wrk_async(cmd: list[str], duration: int) -> c.WrkResult:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise c.BenchError(f"wrk did not finish within {duration + 30}s: {shlex.join(cmd)}") from None
    if proc.returncode != 0:
        raise c.BenchError(f"wrk exited with {proc.returncode}: {err.decode().strip() or out.decode().strip()}")
    return c.parse_wrk(out.decode())


async def storm_once(
    bench: Bench, ns: argparse.Namespace, load_cpus: str | None, kind: str, next_version: int
) -> StormRun:
    """One wrk run; with kind == "storm", rewrite the component ns.storm_writes times meanwhile."""
    cmd = c.wrk_command(
        bench.url, duration=ns.storm_duration, connections=ns.connections, threads=ns.threads, cpus=load_cpus
    )
    path = bench.components / f"{COMPONENT_ID}.py"
    samples: list[tuple[float, int, int | None]] = []
    writes: list[tuple[float, int, bool]] = []
    done = asyncio.Event()

    async def sampler() -> None:
        async with Client(bench.url) as client:
            while not done.is_set():
                status, version = await client.get()
                samples.append((time.perf_counter(), status, version))
                await asyncio.sleep(ns.sample_interval)

    async def writer() -> None:
        # Spread the writes over the run, leaving its first and last half second alone.
        span = ns.storm_duration - 1.0
        interval = span / ns.storm_writes
        start = time.perf_counter() + 0.5
        for i in range(ns.storm_writes):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            broken = ns.broken_every > 0 and i % ns.broken_every == ns.broken_every // 2
            version = next_version + i
            c.write_text(path, component_text(version, broken=broken), atomic=ns.write_mode == "atomic")
            writes.append((time.perf_counter(), version, broken))

    before = reload_metrics(bench.metrics())
    cpu0 = c.cpu_seconds(bench.pid)
    sample_task = asyncio.create_task(sampler())
    write_task = asyncio.create_task(writer()) if kind == "storm" else None
    try:
        result = await run_wrk_async(cmd, ns.storm_duration)
    finally:
        done.set()
        if write_task is not None:
            await write_task
        await sample_task
    result.server_cpu = (c.cpu_seconds(bench.pid) - cpu0) / (result.seconds or ns.storm_duration)
    run = StormRun(kind, result, samples, writes, before)
    return run


async def run_storm(ns: argparse.Namespace, tmp: Path, cpus: tuple[str | None, str | None]) -> list[str]:
    print("\n######## 2. storm: full load while the component is rewritten")
    bench = make_bench("storm", tmp, ns, cpus[0], {COMPONENT_ID: component_text(1)}, CONFIG.format(step=STEP))
    describe_bench(bench)
    wrk_cmd = c.wrk_command(
        bench.url, duration=ns.storm_duration, connections=ns.connections, threads=ns.threads, cpus=cpus[1]
    )
    print(f"  wrk: {shlex.join(wrk_cmd)}")
    print(
        f"  {ns.storm_rounds} rounds of one steady run (no writes) and one storm run ({ns.storm_writes} "
        f"{ns.write_mode} writes spread over the run, every {ns.broken_every}th one a syntax error), "
        f"alternating which goes first; a side client samples GET {PATH} every "
        f"{ns.sample_interval * 1000:.0f} ms during both kinds of run and checks each body's version"
    )
    print(f"  loadavg before: {c.loadavg_text()}")
    sys.stdout.flush()
    runs: list[StormRun] = []
    good = {1}
    broken_versions: set[int] = set()
    next_version = 2
    final_checks: list[str] = []
    try:
        bench.start()
        async with Client(bench.url) as client:
            if (await client.wait_for(1, 5.0))[0] is None:
                raise c.BenchError(f"storm: GET {PATH} never answered version 1\n{bench.server.log_tail()}")
        if ns.warmup:
            warm = await run_wrk_async(
                c.wrk_command(
                    bench.url, duration=ns.warmup, connections=ns.connections, threads=ns.threads, cpus=cpus[1]
                ),
                ns.warmup,
            )
            print(f"  warm-up {ns.warmup}s: {warm.rps:.1f} req/s")
        for r in range(ns.storm_rounds):
            order = ("steady", "storm") if r % 2 == 0 else ("storm", "steady")
            for kind in order:
                run = await storm_once(bench, ns, cpus[1], kind, next_version)
                for _, version, broken in run.writes:
                    (broken_versions if broken else good).add(version)
                next_version += len(run.writes)
                if kind == "storm":
                    # The last write is a good one: it must end up in service.
                    last = max(v for _, v, b in run.writes if not b)
                    async with Client(bench.url) as client:
                        seen, _ = await client.wait_for(last, 10.0, 0.01)
                    final_checks.append(
                        f"round {r + 1}: last good version {last} "
                        f"{'served' if seen is not None else 'NOT served within 10s'} after the storm"
                    )
                    if seen is None:
                        raise c.BenchError(
                            f"storm: version {last} never served after the storm\n{bench.server.log_tail()}"
                        )
                run.metrics_after = reload_metrics(bench.metrics())
                runs.append(run)
                w = run.wrk
                print(
                    f"  round {r + 1} {kind:<7}{w.rps:>10.1f} req/s  p50 {c.fmt_ms(w.p50_ms)}  "
                    f"p99 {c.fmt_ms(w.p99_ms)}  non-2xx {w.non2xx}  errors {w.errors}  "
                    f"server cpu {w.server_cpu:.0%}  samples {len(run.samples)}  writes {len(run.writes)}"
                )
                sys.stdout.flush()
        text = bench.metrics()
    finally:
        bench.server.stop()

    steady = [r for r in runs if r.kind == "steady"]
    storms = [r for r in runs if r.kind == "storm"]
    steady_rps = c.median([r.wrk.rps for r in steady])
    storm_rps = c.median([r.wrk.rps for r in storms])
    ratio = storm_rps / steady_rps
    non2xx = sum(r.wrk.non2xx for r in runs)
    sock = sum(r.wrk.errors for r in runs)
    samples = [s for r in runs for s in r.samples]
    bad_status = sum(1 for _, status, _ in samples if status != 200)
    from_broken = sum(1 for _, _, v in samples if v in broken_versions)
    unknown = sum(1 for _, status, v in samples if status == 200 and v not in good and v not in broken_versions)
    backwards = 0
    for run in runs:
        last = 0
        for _, status, v in run.samples:
            if status == 200 and v is not None:
                backwards += v < last
                last = max(last, v)
    storm_samples = [s for r in storms for s in r.samples]
    distinct = len({v for _, _, v in storm_samples})
    print("== results (storm)")
    print(
        f"  {'run':<16}{'req/s':>10}{'p50':>10}{'p99':>10}{'requests':>10}{'non-2xx':>9}{'errors':>8}"
        f"{'srv cpu':>9}{'req/cpu-s':>11}{'reloads ok':>11}{'refused':>9}{'gc gen2':>9}"
    )

    def delta(run: StormRun, key: str) -> float:
        return run.metrics_after.get(key, 0) - run.metrics_before.get(key, 0)

    for i, run in enumerate(runs):
        w = run.wrk
        print(
            f"  {f'{i // 2 + 1} {run.kind}':<16}{w.rps:>10.1f}{c.fmt_ms(w.p50_ms):>10}{c.fmt_ms(w.p99_ms):>10}"
            f"{w.requests:>10}{w.non2xx:>9}{w.errors:>8}{w.server_cpu:>9.0%}{w.rps / max(w.server_cpu, 1e-9):>11.0f}"
            f"{delta(run, 'reload/success'):>11.0f}{delta(run, 'reload/error'):>9.0f}{delta(run, 'gc2'):>9.0f}"
        )
    paired = [storms[k].wrk.rps / steady[k].wrk.rps for k in range(min(len(storms), len(steady)))]
    eff = c.median([r.wrk.rps / max(r.wrk.server_cpu, 1e-9) for r in storms]) / c.median(
        [r.wrk.rps / max(r.wrk.server_cpu, 1e-9) for r in steady]
    )
    print(
        f"  median steady {steady_rps:.1f} req/s, median storm {storm_rps:.1f} req/s, ratio storm/steady = {ratio:.3f}"
    )
    print(
        f"  per-round ratios: {', '.join(f'{x:.3f}' for x in paired)}; ratio of requests per server "
        f"CPU-second (discounts CPU taken by other processes): {eff:.3f}"
    )
    n_writes = sum(len(r.writes) for r in storms)
    n_broken = sum(1 for r in storms for w in r.writes if w[2])
    hist_n = sum(
        r.metrics_after.get("dynamic_component_reload_seconds_count", 0)
        - r.metrics_before.get("dynamic_component_reload_seconds_count", 0)
        for r in storms
    )
    hist_s = sum(
        r.metrics_after.get("dynamic_component_reload_seconds_sum", 0)
        - r.metrics_before.get("dynamic_component_reload_seconds_sum", 0)
        for r in storms
    )
    print(
        f"  writes: {n_writes} ({n_broken} broken); distinct versions seen by the side client during storms: "
        f"{distinct}; server-side reload time under load (dynamic_component_reload_seconds, batch seen -> "
        f"swapped): mean {hist_s / hist_n * 1000 if hist_n else float('nan'):.1f} ms over {hist_n:.0f}"
    )
    print(
        f"  side-client samples: {len(samples)}; non-200: {bad_status}; from a broken version: {from_broken}; "
        f"version not written: {unknown}; version went backwards: {backwards}"
    )
    for line in final_checks:
        print(f"  {line}")
    starved = [
        f"{i // 2 + 1} {r.kind} {r.wrk.server_cpu:.0%}" for i, r in enumerate(runs) if r.wrk.server_cpu < BUSY_CPU
    ]
    if starved:
        print(
            f"  WARNING: the machine was busy: the server got less than {BUSY_CPU:.0%} of a CPU in "
            f"{', '.join(starved)}; the ratio is perturbed"
        )
    print(f"  loadavg after: {c.loadavg_text()}")
    print("  /metrics after the storms:")
    for line in metric_lines(text):
        print(f"    {line}")
    return [
        verdict(
            non2xx == 0 and sock == 0 and bad_status == 0,
            f"storm non-2xx = {non2xx} (wrk) + {bad_status} (side client), socket errors = {sock} (must be 0)",
        ),
        verdict(
            from_broken == 0 and unknown == 0 and backwards == 0,
            f"storm responses from a broken or unwritten version = {from_broken + unknown}, "
            f"backwards = {backwards} (must be 0; {len(samples)} samples)",
        ),
        verdict(
            ratio >= ns.target_ratio,
            f"storm/steady throughput = {ratio:.3f} "
            f"{'>=' if ratio >= ns.target_ratio else '<'} {ns.target_ratio:g} "
            f"(median of {ns.storm_rounds} x {ns.storm_duration}s, -c{ns.connections})",
        ),
    ]


# --------------------------------------------------------------------------- 3. scale


async def run_scale(ns: argparse.Namespace, tmp: Path, cpus: tuple[str | None, str | None]) -> list[str]:
    n = ns.scale_components
    print(f"\n######## 3. scale: start-up and reload latency with {n} components vs 1")
    ids = [f"c{i:04d}" for i in range(n)]

    def files(count: int) -> dict[str, str]:
        return {cid: component_text(1, cid=cid, step=f"step.bench_{cid}") for cid in ids[:count]}

    # The pipeline uses the first component's step; that component is the one reloaded.
    config = CONFIG.format(step=f"step.bench_{ids[0]}")
    print(
        "  every component registers its own step type (step.bench_c0000 ...); the pipeline uses step.bench_c0000;"
        " the reloaded file is c0000.py"
    )
    print(
        f"  start-up: process start (Popen) -> /readyz 200, polled every 10 ms; {ns.scale_starts} starts each, "
        f"alternating; reload: write -> first response from the new version, {ns.scale_reloads} each, "
        f"alternating between the two servers (both running, idle one waiting)"
    )
    print(f"  loadavg before: {c.loadavg_text()}")
    starts: dict[str, list[float]] = {"1": [], str(n): []}
    loaded: dict[str, float] = {}
    benches: dict[str, Bench] = {}
    sys.stdout.flush()
    for k in range(ns.scale_starts):
        for label, count in (("1", 1), (str(n), n)):
            bench = make_bench(f"scale-{label}-{k}", tmp, ns, cpus[0], files(count), config)
            if k == 0:
                describe_bench(bench)
            keep = k == ns.scale_starts - 1
            try:
                seconds = bench.start(timeout=ns.start_timeout)
                starts[label].append(seconds)
                m = reload_metrics(bench.metrics())
                loaded[label] = m.get("dynamic_components", float("nan"))
                if m.get("dynamic_components") != count:
                    raise c.BenchError(
                        f"scale: {bench.name} reports dynamic_components "
                        f"{m.get('dynamic_components')}, expected {count}\n{bench.server.log_tail()}"
                    )
                print(
                    f"  start {k + 1} with {label:>4} component(s): {seconds * 1000:.0f} ms to /readyz 200 "
                    f"(dynamic_components {m['dynamic_components']:.0f}, "
                    f"RSS {c.proc_status_kb(bench.pid) or 0:.0f} kB)"
                )
                sys.stdout.flush()
            except BaseException:
                bench.server.stop()
                raise
            if keep:
                benches[label] = bench
            else:
                bench.server.stop()
                shutil.rmtree(bench.state, ignore_errors=True)

    latencies: dict[str, list[float]] = {"1": [], str(n): []}
    server_side: dict[str, tuple[float, float]] = {}
    timeouts = 0
    try:
        before = {label: reload_metrics(b.metrics()) for label, b in benches.items()}
        clients = {label: Client(b.url) for label, b in benches.items()}
        for cl in clients.values():
            await cl.__aenter__()
        try:
            for label, b in benches.items():
                if (await clients[label].wait_for(1, 5.0))[0] is None:
                    raise c.BenchError(f"scale: {b.name} never answered version 1")
            for i in range(ns.scale_reloads):
                for label, b in benches.items():
                    # save_and_wait writes COMPONENT_ID; here the file is c0000.py
                    path = b.components / f"{ids[0]}.py"
                    t0 = time.perf_counter()
                    c.write_text(
                        path,
                        component_text(i + 2, cid=ids[0], step=f"step.bench_{ids[0]}"),
                        atomic=ns.write_mode == "atomic",
                    )
                    seen, _ = await clients[label].wait_for(i + 2, ns.save_timeout)
                    if seen is None:
                        timeouts += 1
                    else:
                        latencies[label].append(seen - t0)
                    await asyncio.sleep(ns.gap)
        finally:
            for cl in clients.values():
                await cl.__aexit__(None, None, None)
        texts = {label: b.metrics() for label, b in benches.items()}
        for label in benches:
            after = reload_metrics(texts[label])
            cnt = after.get("dynamic_component_reload_seconds_count", 0) - before[label].get(
                "dynamic_component_reload_seconds_count", 0
            )
            tot = after.get("dynamic_component_reload_seconds_sum", 0) - before[label].get(
                "dynamic_component_reload_seconds_sum", 0
            )
            server_side[label] = (cnt, tot)
        rss = {label: c.proc_status_kb(b.pid) for label, b in benches.items()}
    finally:
        for b in benches.values():
            b.server.stop()

    if not latencies["1"] or not latencies[str(n)]:
        raise c.BenchError("scale: no reload was served")
    print("== results (scale)")
    for label in ("1", str(n)):
        s = starts[label]
        print(
            f"  start-up with {label:>4} component(s): median {c.median(s) * 1000:.0f} ms  "
            f"(runs: {', '.join(f'{x * 1000:.0f}' for x in s)} ms)"
        )
    per = (c.median(starts[str(n)]) - c.median(starts["1"])) / max(1, n - 1) * 1000
    print(f"  => {per:.2f} ms per extra component at start-up")
    for label in ("1", str(n)):
        cnt, tot = server_side[label]
        print(
            f"  reload with {label:>4} loaded: {latency_summary(latencies[label])}  "
            f"(median {c.median(latencies[label]) * 1000:.1f} ms; server-side mean "
            f"{tot / cnt * 1000 if cnt else float('nan'):.1f} ms over {cnt:.0f}; RSS {rss[label] or 0} kB)"
        )
    print(f"  timeouts: {timeouts}; loadavg after: {c.loadavg_text()}")
    for label in ("1", str(n)):
        print(f"  /metrics of the {label}-component server:")
        for line in metric_lines(texts[label]):
            print(f"    {line}")
    ratio = c.median(latencies[str(n)]) / c.median(latencies["1"])
    (c1, s1), (cn, sn) = server_side["1"], server_side[str(n)]
    if c1 and cn:
        print(
            f"  server-side only (batch seen -> swapped, excludes the watcher's own delay): mean "
            f"{sn / cn * 1000:.2f} ms with {n} / {s1 / c1 * 1000:.2f} ms with 1 = {(sn / cn) / (s1 / c1):.2f}x"
        )
    return [
        f"INFO: start-up with {n} components: {c.median(starts[str(n)]) * 1000:.0f} ms (median of {ns.scale_starts}); "
        f"with 1: {c.median(starts['1']) * 1000:.0f} ms (no target was set for it)",
        verdict(
            ratio <= ns.target_scale and timeouts == 0,
            f"reload median with {n} loaded / with 1 loaded = {c.median(latencies[str(n)]) * 1000:.1f} / "
            f"{c.median(latencies['1']) * 1000:.1f} ms = {ratio:.2f}x (<= {ns.target_scale:g}x), "
            f"{ns.scale_reloads} reloads each, {timeouts} timeouts",
        ),
    ]


# --------------------------------------------------------------------------- 4. memory


async def run_memory(ns: argparse.Namespace, tmp: Path, cpus: tuple[str | None, str | None]) -> list[str]:
    print(
        f"\n######## 4. memory: RSS after {ns.mem_reloads} reloads of one component "
        f"(after a warm-up of {ns.mem_warmup})"
    )
    bench = make_bench("memory", tmp, ns, cpus[0], {COMPONENT_ID: component_text(1)}, CONFIG.format(step=STEP))
    describe_bench(bench)
    print(
        f"  each reload: write a new version ({ns.write_mode}), then GET {PATH} every "
        f"{ns.mem_poll * 1000:g} ms on one keep-alive connection until it answers the new version; "
        f"VmRSS from /proc/PID/status"
    )
    print(f"  loadavg before: {c.loadavg_text()}")
    sys.stdout.flush()
    rows: list[tuple[str, int, int | None, int | None]] = []  # (phase, reloads, VmRSS kB, VmHWM kB)
    timeouts = 0
    version = 1
    try:
        bench.start()
        pid = bench.pid
        rows.append(("started", 0, c.proc_status_kb(pid), c.proc_status_kb(pid, "VmHWM")))
        async with Client(bench.url) as client:
            if (await client.wait_for(1, 5.0))[0] is None:
                raise c.BenchError(f"memory: GET {PATH} never answered version 1")
            done = 0
            t_start = time.perf_counter()
            for total, phase in ((ns.mem_warmup, "warm-up"), (ns.mem_reloads, "measured")):
                for i in range(total):
                    version += 1
                    latency, _ = await save_and_wait(bench, client, version, ns, ns.mem_poll)
                    timeouts += latency is None
                    done += 1
                    step = max(1, ns.mem_reloads // 10)
                    if phase == "measured" and (i + 1) % step == 0 and i + 1 < total:
                        rows.append(("measuring", done, c.proc_status_kb(pid), c.proc_status_kb(pid, "VmHWM")))
                if phase == "warm-up":
                    await asyncio.sleep(1.0)  # let the retired versions stop
                    rows.append(("after warm-up", done, c.proc_status_kb(pid), c.proc_status_kb(pid, "VmHWM")))
            wall = time.perf_counter() - t_start
            await asyncio.sleep(1.0)
            rows.append(("end (+1s)", done, c.proc_status_kb(pid), c.proc_status_kb(pid, "VmHWM")))
            requests = client.requests
        text = bench.metrics()
    finally:
        bench.server.stop()

    m = reload_metrics(text)
    print("== results (memory)")
    print(f"  {'point':<16}{'reloads':>8}{'VmRSS kB':>11}{'VmHWM kB':>11}")
    for phase, n_done, rss, hwm in rows:
        print(f"  {phase:<16}{n_done:>8}{rss or 0:>11}{hwm or 0:>11}")
    base = next(r for r in rows if r[0] == "after warm-up")[2]
    end = rows[-1][2]
    if base is None or end is None:
        raise c.BenchError("memory: could not read VmRSS")
    growth_mb = (end - base) / 1024
    print(f"  {done} reloads in {wall:.1f}s ({done / wall:.1f}/s), {timeouts} timeouts, {requests} polling requests")
    print(
        f"  RSS growth over the {ns.mem_reloads} measured reloads: {growth_mb:+.2f} MB "
        f"({(end - base) / max(1, ns.mem_reloads):+.2f} kB per reload)"
    )
    print(
        f"  /metrics: dynamic_components = {m.get('dynamic_components', float('nan')):.0f}, "
        f'reloads (module_operations_total{{module="dynamic",operation="reload",status="success"}}) = '
        f"{m.get('reload/success', 0):.0f} (expected {ns.mem_warmup + ns.mem_reloads}), refused = "
        f"{m.get('reload/error', 0):.0f}"
    )
    for line in metric_lines(text):
        print(f"    {line}")
    print(f"  loadavg after: {c.loadavg_text()}")
    if m.get("reload/success", 0) < ns.mem_warmup + ns.mem_reloads:
        raise c.BenchError(
            f"memory: /metrics counts {m.get('reload/success', 0):.0f} reloads, "
            f"expected {ns.mem_warmup + ns.mem_reloads}"
        )
    return [
        verdict(
            growth_mb < ns.target_mb and timeouts == 0,
            f"RSS growth after {ns.mem_reloads} reloads = {growth_mb:+.2f} MB (< {ns.target_mb:g} MB), "
            f"{timeouts} timeouts",
        )
    ]


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Hot-reload benchmarks (latency, storm, scale, memory).")
    p.add_argument("part", nargs="?", default="all", choices=(*PARTS, "all"), help="which benchmark (default all)")
    g = p.add_argument_group("all parts")
    g.add_argument(
        "--write-mode",
        choices=("atomic", "inplace"),
        default="atomic",
        help="atomic: write a hidden temp file and rename it over the component (default); "
        "inplace: open, truncate and write the file itself",
    )
    g.add_argument(
        "--debounce", default=None, help="set WORKFLOW_COMPONENTS_DEBOUNCE (default: unset, the server's 50ms)"
    )
    g.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="WORKFLOW_LOG_LEVEL of the servers (default warning: no per-request log line)",
    )
    g.add_argument("--save-timeout", type=float, default=5.0, help="seconds a save may take to be served (5)")
    g.add_argument("--gap", type=float, default=0.05, help="pause after a save is served, seconds (0.05)")
    g.add_argument("--no-pin", action="store_true", help="do not pin the server and the load to separate CPUs")
    g.add_argument("--keep-temp", action="store_true", help="keep the temp dir (configs, components, logs)")
    g = p.add_argument_group("latency")
    g.add_argument("--saves", type=int, default=100, help="saves to time (100)")
    g.add_argument("--target-p50", type=float, default=30.0, help="ms (30)")
    g.add_argument("--target-p99", type=float, default=100.0, help="ms (100)")
    g = p.add_argument_group("storm")
    g.add_argument("--storm-duration", type=int, default=10, help="whole seconds per wrk run (10)")
    g.add_argument("--storm-rounds", type=int, default=3, help="rounds of steady + storm runs (3)")
    g.add_argument("--storm-writes", type=int, default=100, help="component writes per storm run (100)")
    g.add_argument("--broken-every", type=int, default=5, help="every Nth write is a syntax error (5; 0: none)")
    g.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    g.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    g.add_argument("--warmup", type=int, default=2, help="whole seconds of wrk before measuring (2)")
    g.add_argument("--sample-interval", type=float, default=0.01, help="side client pause between GETs, s (0.01)")
    g.add_argument("--target-ratio", type=float, default=0.8, help="storm/steady throughput (0.8)")
    g = p.add_argument_group("scale")
    g.add_argument("--scale-components", type=int, default=500, help="components in the big server (500)")
    g.add_argument("--scale-starts", type=int, default=3, help="start-ups timed per server (3)")
    g.add_argument("--scale-reloads", type=int, default=20, help="reloads timed per server (20)")
    g.add_argument("--start-timeout", type=float, default=120.0, help="seconds a start-up may take (120)")
    g.add_argument("--target-scale", type=float, default=2.0, help="reload median ratio N/1 (2.0)")
    g = p.add_argument_group("memory")
    g.add_argument("--mem-reloads", type=int, default=1000, help="reloads measured (1000)")
    g.add_argument("--mem-warmup", type=int, default=50, help="reloads before the first reading (50)")
    g.add_argument("--mem-poll", type=float, default=0.002, help="pause between polls while waiting, s (0.002)")
    g.add_argument("--target-mb", type=float, default=10.0, help="allowed RSS growth, MB (10)")
    ns = p.parse_args(argv)
    if (
        min(
            ns.saves,
            ns.storm_duration,
            ns.storm_rounds,
            ns.storm_writes,
            ns.connections,
            ns.threads,
            ns.scale_components,
            ns.scale_starts,
            ns.scale_reloads,
            ns.mem_reloads,
        )
        < 1
    ):
        p.error("counts and durations must be >= 1")
    if ns.storm_duration < 2:
        p.error("--storm-duration must be at least 2 (writes are spread over duration - 1 s)")
    if min(ns.gap, ns.sample_interval, ns.mem_poll, ns.warmup, ns.mem_warmup, ns.broken_every) < 0:
        p.error("pauses and warm-ups must be >= 0")
    if ns.connections < ns.threads:
        p.error("--connections must be at least --threads")
    return ns


async def run(ns: argparse.Namespace, tmp: Path) -> int:
    server_cpus, load_cpus = c.cpu_plan(not ns.no_pin)
    print("== machine")
    for line in c.machine_lines():
        print("  " + line)
    if load_cpus is not None:
        os.sched_setaffinity(0, {int(load_cpus)})  # this process (the polling clients) next to wrk
    print("== command")
    print("  " + shlex.join([sys.executable, *sys.argv]))
    plan = f"servers on CPU {server_cpus}, wrk and this script (clients, writes) on CPU {load_cpus}"
    print(f"  pinning: {plan if server_cpus else 'off'}")
    print(
        f"  writes: {ns.write_mode}; WORKFLOW_COMPONENTS_DEBOUNCE: {ns.debounce or 'unset (server default 50ms)'}; "
        f"log level {ns.log_level}; temp dir {tmp}"
    )
    print("== pipeline config (scale uses step.bench_c0000 instead)")
    print("  " + CONFIG.format(step=STEP).rstrip().replace("\n", "\n  "))
    print("== component (version N; a broken save appends a syntax error)")
    print("  " + component_text(1).rstrip().replace("\n", "\n  "))
    sys.stdout.flush()
    parts = PARTS if ns.part == "all" else (ns.part,)
    verdicts: list[str] = []
    funcs = {"latency": run_latency, "storm": run_storm, "scale": run_scale, "memory": run_memory}
    for part in parts:
        started = time.monotonic()
        verdicts += await funcs[part](ns, tmp, (server_cpus, load_cpus))
        print(f"  ({part} took {time.monotonic() - started:.0f}s)")
        sys.stdout.flush()
    print("\n== summary")
    print(f"  loadavg now: {c.loadavg_text()} (other work on this machine perturbs every figure)")
    for line in verdicts:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.part in ("storm", "all"):
        try:
            c.wrk_binary()
        except c.BenchError as exc:
            print(f"bench_reload: {exc}", file=sys.stderr)
            return 2
    return c.run_in_temp("bench-reload-", ns.keep_temp, lambda tmp: asyncio.run(run(ns, tmp)))


if __name__ == "__main__":
    sys.exit(main())
