"""Helpers shared by the benchmarks in tests/bench: ports, processes, readiness, wrk, machine facts.

Everything here is bounded in time and talks to 127.0.0.1 only. Import it from a benchmark script
run as `python tests/bench/NAME.py` (the script's folder is then first on sys.path).
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class BenchError(RuntimeError):
    """Something the benchmark needs did not work; the message says what."""


# --------------------------------------------------------------------------- ports and HTTP


def run_in_temp(prefix: str, keep_temp: bool, body: Callable[[Path], int]) -> int:
    """Run a benchmark in a fresh temp dir: its exit code, or 1 with `BENCHMARK FAILED` on a BenchError.

    Prints how long it took; the temp dir is removed unless `keep_temp` or the run failed.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    started = time.monotonic()
    failed = False
    try:
        return body(tmp)
    except BenchError as exc:
        failed = True
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        failed = True
        print("\ninterrupted", file=sys.stderr)
        return 1
    finally:
        print(f"(took {time.monotonic() - started:.0f}s)")
        if keep_temp or failed:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url`; return (status, body text). Connection errors raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def http_post_json(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, str]:
    """POST a JSON body; return (status, body text)."""
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------- CPU pinning


def cpu_plan(pin: bool = True) -> tuple[str | None, str | None]:
    """CPU lists (server, load generator) for `taskset -c`, or (None, None) when pinning is off or impossible."""
    if not pin or shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return str(cpus[0]), str(cpus[1])


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    """`cmd` prefixed with `taskset -c CPUS` (taskset execs, so the pid stays the command's)."""
    return ["taskset", "-c", cpus, *cmd] if cpus else list(cmd)


# --------------------------------------------------------------------------- server subprocesses


@dataclass
class ServerProcess:
    """A server started as a subprocess, its output in a log file; stop() ends only this pid."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    proc: subprocess.Popen | None = None
    _log: object = None

    def start(self) -> ServerProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 -- the server writes to it until stop() closes it
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        """Poll `url` until it answers 200; raise BenchError (with the log's tail) if it never does."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready\n{self.log_tail()}"
                )
            try:
                status, _ = http_get(url, timeout=1.0)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise BenchError(f"{self.name} not ready at {url} after {timeout:.0f}s ({last})\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; return the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    | {line}" for line in text[-lines:])

    def log_lines(self) -> int:
        try:
            with open(self.log_path, "rb") as fh:
                return sum(1 for _ in fh)
        except OSError:
            return 0


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment plus `extra`, without PYTHON* variables that would change the child."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONBREAKPOINT")}
    env.update(extra or {})
    return env


def venv_script(name: str) -> str:
    """A console script installed next to this interpreter (the venv's bin), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} is not installed (pip install -e . in the venv)")
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc), or NaN when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    """What one wrk run reported."""

    rps: float
    requests: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    non2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    raw: str = ""
    server_cpu: float = float("nan")  # share of one CPU the server used during the run (set by the caller)

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk's summary (run with --latency); raise BenchError when it has no Requests/sec line."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if rps is None:
        raise BenchError(f"wrk printed no Requests/sec line:\n{text}")
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.M)
    pct = {
        m.group(1): _ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(done.group(1)) if done else 0,
        seconds=_ms(done.group(2), done.group(3)) / 1000 if done else 0.0,
        p50_ms=pct.get("50"),
        p99_ms=pct.get("99"),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True))
        if sock
        else {},
        raw=text,
    )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is not installed: run `apt-get update && apt-get install -y wrk` (as root)")
    return found


def wrk_version() -> str:
    try:
        out = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "unknown"


def write_post_lua(path: Path, body: str, content_type: str = "application/json") -> Path:
    """A wrk script that POSTs `body` with Content-Type `content_type` on every request."""
    if "]==]" in body:
        raise ValueError("body contains the Lua long-bracket terminator")
    path.write_text(
        "-- generated by tests/bench/_common.py: POST a fixed body\n"
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{body}]==]\n"
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
    )
    return path


def wrk_command(
    url: str,
    *,
    duration: int,
    connections: int,
    threads: int = 1,
    script: Path | None = None,
    cpus: str | None = None,
    timeout: str = "5s",
) -> list[str]:
    """The exact wrk command line (pinned to `cpus` when given); wrk takes whole seconds only."""
    if int(duration) != duration or duration < 1:
        raise ValueError(f"wrk durations are whole seconds >= 1, not {duration!r}")
    cmd = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--latency", "--timeout", timeout]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    return pinned(cmd, cpus)


def run_wrk(cmd: Sequence[str], duration: float) -> WrkResult:
    """Run a wrk command line (from wrk_command) and parse it; bounded to duration + 30 s."""
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + 30:.0f}s: {shlex.join(cmd)}") from None
    if out.returncode != 0:
        raise BenchError(f"wrk exited with {out.returncode}: {out.stderr.strip() or out.stdout.strip()}")
    return parse_wrk(out.stdout)


# --------------------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines() -> list[str]:
    """nproc, CPU model, kernel, Python and key library versions."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = loadavg_text()
    return [
        f"nproc:    {usable} (os.cpu_count {os.cpu_count()})",
        f"cpu:      {cpu_model()}",
        f"kernel:   {platform.system()} {platform.release()} {platform.machine()}",
        f"python:   {platform.python_implementation()} {sys.version.split()[0]} ({sys.executable})",
        f"packages: aiohttp {ver('aiohttp')}, jsonschema {ver('jsonschema')}, "
        f"prometheus-client {ver('prometheus-client')}, uvloop {ver('uvloop')}",
        f"wrk:      {wrk_version()}",
        f"loadavg:  {load} (before the run)",
    ]


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else (f"{value:.2f}ms" if value < 100 else f"{value:.0f}ms")


# --------------------------------------------------------------------------- added for bench_reload.py


def loadavg_text() -> str:
    """The 1, 5 and 15 minute load averages, or "n/a"."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def proc_status_kb(pid: int, key: str = "VmRSS") -> int | None:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM, ...), or None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


_PROM_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_PROM_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def prometheus_samples(text: str, name: str) -> list[tuple[dict[str, str], float, str]]:
    """(labels, value, raw line) of every sample named `name` in Prometheus text."""
    out = []
    for line in text.splitlines():
        m = _PROM_SAMPLE.match(line)
        if m and m.group("name") == name:
            out.append((dict(_PROM_LABEL.findall(m.group("labels") or "")), float(m.group("value")), line))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of `values`, NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


def write_text(path: Path, text: str, *, atomic: bool = True) -> None:
    """Write `text` to `path`: atomically (a hidden temp file in the same folder, then rename) or in place."""
    if not atomic:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
