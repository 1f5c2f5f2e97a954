"""The proxy against nginx, a naive Tornado proxy and marimo itself, side by side in one run.

    .venv/bin/python bench/proxy.py [--rounds 3] [--duration 5] [--connections 16]
                                    [--baseline REV] [--markdown FILE] [--ws-only]

One marimo serves every HTTP contender: the one the real orchestrator starts
(``python -m orchestrator --auth none --host 127.0.0.1`` on a fresh state). Contenders:

* ``direct``: marimo's own port.
* ``nginx``: nginx from Debian (``apt-get install -y nginx`` when missing), as the earlier Quix
  images used it: ``proxy_pass`` to an upstream with ``keepalive 32``, ``proxy_http_version
  1.1``, the WebSocket ``Upgrade``/``Connection`` headers, proxy buffering as nginx's defaults
  (on), ``gzip`` off (its default), access log off, one worker process.
* ``orchestrator``: the real orchestrator's port: its proxy plus everything in front of it
  (auth guard, metrics, access log, framing policy).
* ``proxy``: ``proxy.routes.proxy_rules`` alone in a process, on the same server settings.
* ``proxy@REV`` (with ``--baseline REV``): the same, with ``proxy/`` as it was at git ``REV``.
* ``naive``: a Tornado proxy on Tornado's simple ``AsyncHTTPClient`` (a new upstream connection
  per request, whole bodies buffered), as jupyter-server-proxy does.

HTTP load: ``wrk -t1 -c{connections} -d{duration}s --latency`` (installed from Debian when
missing), for ``/health`` and for the editor's largest asset (the biggest script named in
marimo's ``index.html``), contenders alternating, their order rotated every round. CPU per
request is read from ``/proc`` for the contender's process(es) and for marimo.

WebSockets: marimo's sockets do not echo, so every contender relays to a small echo backend
instead (the orchestrator cannot be pointed at it: ``proxy`` stands for it there). Round trips
of 1 KB text messages one at a time, and the time for an 8 MB binary message to pass (sent
until the backend's short acknowledgement arrives), each with the CPU the contender's
process(es) spent on it.

Medians over the rounds; ratios against nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.orchestrator import free_port, hermetic_env  # noqa: E402

PYTHON = sys.executable
TICK = os.sysconf("SC_CLK_TCK")

STANDALONE_PROXY = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import tornado.httpserver, tornado.web
from proxy.routes import proxy_rules
import proxy.routes as routes
OPEN = {}  # no sign-in, by name where the proxy requires a guard (older revisions take none)
if hasattr(routes, "admit_everyone"):
    OPEN = dict(guard=routes.admit_everyone, admits_at_once=routes.admits_everyone_at_once)
from proxy.upstream import Upstream

async def main() -> None:
    upstream = Upstream("127.0.0.1", int(sys.argv[2]), 1, None)
    app = tornado.web.Application(
        proxy_rules(lambda: upstream, lambda: b"loading", **OPEN), compress_response=False
    )
    server = tornado.httpserver.HTTPServer(app, xheaders=False, max_buffer_size=64 * 1024 * 1024)
    server.listen(int(sys.argv[3]), "127.0.0.1")
    await asyncio.Event().wait()

asyncio.run(main())
"""

NAIVE_PROXY = """
import asyncio, sys
import tornado.httpclient, tornado.httpserver, tornado.web, tornado.websocket

UPSTREAM = "127.0.0.1:" + sys.argv[1]
HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "host"}
tornado.httpclient.AsyncHTTPClient.configure(None, max_clients=256)

class Relay(tornado.websocket.WebSocketHandler):
    async def open(self) -> None:
        self.upstream = await tornado.websocket.websocket_connect(
            "ws://" + UPSTREAM + self.request.uri, max_message_size=64 << 20)
        asyncio.ensure_future(self.pump())
    async def pump(self) -> None:
        while (message := await self.upstream.read_message()) is not None:
            await self.write_message(message, binary=isinstance(message, bytes))
        self.close()
    async def on_message(self, message) -> None:
        await self.upstream.write_message(message, binary=isinstance(message, bytes))
    def on_close(self) -> None:
        self.upstream.close()
    @property
    def max_message_size(self) -> int:
        return 64 << 20

class Forward(tornado.web.RequestHandler):
    async def get(self) -> None:
        client = tornado.httpclient.AsyncHTTPClient()
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in HOP}
        response = await client.fetch(
            "http://" + UPSTREAM + self.request.uri, headers=headers, raise_error=False,
            decompress_response=False)
        self.set_status(response.code)
        self._headers = tornado.httputil.HTTPHeaders()
        for k, v in response.headers.get_all():
            if k.lower() not in HOP:
                self.add_header(k, v)
        self.finish(response.body)
    def compute_etag(self):
        return None

async def main() -> None:
    app = tornado.web.Application(
        [(r"/ws.*", Relay), (r"/.*", Forward)], websocket_max_message_size=64 << 20)
    tornado.httpserver.HTTPServer(app).listen(int(sys.argv[2]), "127.0.0.1")
    await asyncio.Event().wait()

asyncio.run(main())
"""

ECHO = """
import asyncio, sys
import tornado.web, tornado.websocket

class Echo(tornado.websocket.WebSocketHandler):
    async def on_message(self, message) -> None:
        if isinstance(message, bytes) and len(message) > 65536:
            await self.write_message("ok %d" % len(message))  # big ones: a short ack
        else:
            await self.write_message(message, binary=isinstance(message, bytes))

async def main() -> None:
    app = tornado.web.Application([(r"/.*", Echo)], websocket_max_message_size=64 << 20)
    app.listen(int(sys.argv[1]), "127.0.0.1")
    await asyncio.Event().wait()

asyncio.run(main())
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 0;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream marimo {{ server 127.0.0.1:{marimo}; keepalive 32; }}
    upstream echo {{ server 127.0.0.1:{echo}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{http_port};
        location / {{
            proxy_pass http://marimo;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }}
    }}
    server {{
        listen 127.0.0.1:{ws_port};
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""

NOTEBOOK = "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    x = 1\n    return\n"


def ensure_debian_tool(binary: str, package: str) -> str:
    found = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if found:
        return found
    print(f"installing {package} from Debian…", flush=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", package], check=True, stdout=subprocess.DEVNULL
    )
    found = shutil.which(binary) or f"/usr/sbin/{binary}"
    if not Path(found).exists():
        raise SystemExit(f"{binary} is still missing after installing {package}")
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # an external process coming up: nothing to wait on but its port
    raise SystemExit(f"{url} did not answer within {timeout} s")


@dataclass
class Contender:
    name: str
    http_port: int | None
    ws_port: int | None
    pids: list[int] = field(default_factory=list)
    """Processes whose CPU counts as this contender's (empty: marimo's own for direct)."""


class Processes:
    """Every process this run starts, each in its own session; all ended on exit."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=15)
                    break
                except subprocess.TimeoutExpired:
                    continue


def marimo_of(orchestrator_port: int) -> tuple[int, int]:
    """pid and port of the marimo the orchestrator runs."""
    import psutil

    with urllib.request.urlopen(f"http://127.0.0.1:{orchestrator_port}/-/status") as response:
        pid = json.load(response)["marimo"]["pid"]
    for conn in psutil.Process(pid).net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN:
            return pid, conn.laddr.port
    raise SystemExit("marimo listens on no port")


def editor_asset() -> str:
    import marimo

    static = Path(marimo.__file__).parent / "_static"
    index = (static / "index.html").read_text(encoding="utf-8")
    names = set(re.findall(r'\./assets/([^"\']+\.js)', index))
    return max(names, key=lambda name: (static / "assets" / name).stat().st_size)


@contextmanager
def everything(args: argparse.Namespace) -> Iterator[tuple[list[Contender], int, dict[str, str]]]:
    work = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    procs = Processes(work)
    try:
        nginx = ensure_debian_tool("nginx", "nginx")
        notebooks = work / "notebooks"
        notebooks.mkdir()
        (notebooks / "notebook.py").write_text(NOTEBOOK)
        orchestrator_port = free_port()
        orchestrator = procs.start(
            "orchestrator",
            [
                PYTHON,
                "-m",
                "orchestrator",
                str(notebooks),
                "--host",
                "127.0.0.1",
                "--port",
                str(orchestrator_port),
                "--state-dir",
                str(work / "state"),
                "--auth",
                "none",
            ],
            env=hermetic_env(),
        )
        wait_http(f"http://127.0.0.1:{orchestrator_port}/-/healthy")
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{orchestrator_port}/-/ready") as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the orchestrator's marimo did not become ready")
            time.sleep(0.2)  # the orchestrator preparing its state: polled, nothing to await
        marimo_pid, marimo_port = marimo_of(orchestrator_port)

        echo_port = free_port()
        procs.start("echo", [PYTHON, "-c", ECHO, str(echo_port)])
        contenders = [
            Contender("direct", marimo_port, echo_port, [marimo_pid]),
            Contender("orchestrator", orchestrator_port, None, [orchestrator.pid]),
        ]
        sources = {"proxy": ROOT}
        if args.baseline:
            from revisions import export

            sources[f"proxy@{args.baseline}"] = export(args.baseline, work, "proxy")
        for name, source in sources.items():
            http_port, ws_port = free_port(), free_port()
            h = procs.start(
                name,
                [PYTHON, "-c", STANDALONE_PROXY, str(source), str(marimo_port), str(http_port)],
            )
            w = procs.start(
                name + "-ws",
                [PYTHON, "-c", STANDALONE_PROXY, str(source), str(echo_port), str(ws_port)],
            )
            contenders.append(Contender(name, http_port, ws_port, [h.pid, w.pid]))
        nginx_http, nginx_ws = free_port(), free_port()
        prefix = work / "nginx"
        prefix.mkdir()
        (prefix / "nginx.conf").write_text(
            NGINX_CONF.format(
                prefix=prefix,
                marimo=marimo_port,
                echo=echo_port,
                http_port=nginx_http,
                ws_port=nginx_ws,
            )
        )
        n = procs.start("nginx", [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
        naive_http, naive_ws = free_port(), free_port()
        nh = procs.start("naive", [PYTHON, "-c", NAIVE_PROXY, str(marimo_port), str(naive_http)])
        nw = procs.start("naive-ws", [PYTHON, "-c", NAIVE_PROXY, str(echo_port), str(naive_ws)])
        contenders.append(Contender("nginx", nginx_http, nginx_ws, [n.pid]))
        contenders.append(Contender("naive", naive_http, naive_ws, [nh.pid, nw.pid]))
        for contender in contenders:
            if contender.http_port:
                wait_http(f"http://127.0.0.1:{contender.http_port}/health")
        time.sleep(0.5)  # let nginx fork its worker before its pids are read
        import psutil

        for contender in contenders:
            if contender.name == "nginx":
                contender.pids += [c.pid for c in psutil.Process(n.pid).children()]
        info = {
            "marimo_pid": str(marimo_pid),
            "work": str(work),
            "nginx": subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip(),
            "wrk": ensure_debian_tool("wrk", "wrk"),
        }
        yield contenders, marimo_pid, info
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class HttpRun:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    marimo_cpu_us: float
    errors: int


def _ms(text: str) -> float:
    """wrk's latency (``812.00us``, ``1.25ms``, ``1.02s``, ``2.00m``) in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if found is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def run_wrk(
    wrk: str, url: str, args: argparse.Namespace, pids: list[int], marimo_pid: int, connections: int
) -> HttpRun:
    subprocess.run([wrk, "-t1", f"-c{connections}", "-d1s", url], capture_output=True, check=True)
    cpu0, m0 = cpu_seconds(pids), cpu_seconds([marimo_pid])
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{args.duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu1, m1 = cpu_seconds(pids), cpu_seconds([marimo_pid])
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    try:
        p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    except (AttributeError, ValueError) as error:
        raise SystemExit(f"cannot read wrk's output for {url}:\n{out}") from error
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return HttpRun(
        rps, p50, p99, 1e6 * (cpu1 - cpu0) / max(total, 1), 1e6 * (m1 - m0) / max(total, 1), errors
    )


async def ws_round_trips(port: int, count: int) -> list[float]:
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(f"ws://127.0.0.1:{port}/ws", max_message_size=64 << 20)
    message = "x" * 1024
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await conn.write_message(message)
        echoed = await conn.read_message()
        times.append(time.perf_counter() - started)
        assert echoed == message
    conn.close()
    return times


async def ws_big(port: int, count: int) -> list[float]:
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(f"ws://127.0.0.1:{port}/ws", max_message_size=64 << 20)
    payload = os.urandom(8 * 1024 * 1024)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await conn.write_message(payload, binary=True)
        ack = await conn.read_message()
        times.append(time.perf_counter() - started)
        assert ack == f"ok {len(payload)}", ack
    conn.close()
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rotate(items: list[Contender], by: int) -> list[Contender]:
    by %= len(items)
    return items[by:] + items[:by]


def fmt_ratio(value: float, reference: float | None) -> str:
    return f"{value / reference:.2f}×" if reference else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--ws-trips", type=int, default=1000, help="1 KB round trips per round")
    parser.add_argument("--ws-big", type=int, default=5, help="8 MB messages per round")
    parser.add_argument(
        "--ws-only", action="store_true", help="only the WebSocket figures (no wrk runs)"
    )
    parser.add_argument("--baseline", help="also run proxy/ as it was at this git revision")
    parser.add_argument("--markdown", type=Path, help="write the tables to this file too")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(),
        help="comma-separated contenders to run (nginx, the reference, always runs)",
    )
    args = parser.parse_args()
    asset = editor_asset()
    # label: (path, connections); one connection shows the latency a proxy adds, no queueing.
    paths = {
        "/health": ("/health", args.connections),
        "asset": (f"/assets/{asset}", args.connections),
        "/health c1": ("/health", 1),
    }
    with everything(args) as (contenders, marimo_pid, info):
        if args.only:
            contenders = [c for c in contenders if c.name in args.only or c.name == "nginx"]
        http: dict[tuple[str, str], list[HttpRun]] = {}
        load: list[float] = []
        for round_number in range(0 if args.ws_only else args.rounds):
            for label, (path, connections) in paths.items():
                for contender in rotate(contenders, round_number):
                    if contender.http_port is None:
                        continue
                    url = f"http://127.0.0.1:{contender.http_port}{path}"
                    run = run_wrk(info["wrk"], url, args, contender.pids, marimo_pid, connections)
                    load.append(os.getloadavg()[0])
                    http.setdefault((label, contender.name), []).append(run)
                    print(
                        f"round {round_number + 1} {label:22} {contender.name:14} "
                        f"{run.rps:9.1f} req/s  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  "
                        f"cpu {run.cpu_us:6.0f} us/req  marimo {run.marimo_cpu_us:6.0f} us/req"
                        f"{'  ERRORS ' + str(run.errors) if run.errors else ''}",
                        flush=True,
                    )
        ws: dict[str, dict[str, list[float]]] = {}
        ws_load: list[float] = []
        for round_number in range(args.rounds):
            for contender in rotate([c for c in contenders if c.ws_port], round_number):
                assert contender.ws_port is not None
                cpu0 = cpu_seconds(contender.pids)
                trips = asyncio.run(ws_round_trips(contender.ws_port, args.ws_trips))
                cpu1 = cpu_seconds(contender.pids)
                big = asyncio.run(ws_big(contender.ws_port, args.ws_big))
                cpu2 = cpu_seconds(contender.pids)
                ws_load.append(os.getloadavg()[0])
                entry = ws.setdefault(
                    contender.name, {"p50": [], "p99": [], "big": [], "cpu": [], "cpu_big": []}
                )
                entry["p50"].append(1000 * statistics.median(trips))
                entry["p99"].append(1000 * percentile(trips, 0.99))
                entry["big"].append(1000 * statistics.median(big))
                entry["cpu"].append(1e6 * (cpu1 - cpu0) / args.ws_trips)
                entry["cpu_big"].append(1e3 * (cpu2 - cpu1) / args.ws_big)
                print(
                    f"round {round_number + 1} ws       {contender.name:14} 1 KB p50 "
                    f"{entry['p50'][-1]:.3f} ms  p99 {entry['p99'][-1]:.3f} ms  "
                    f"cpu {entry['cpu'][-1]:.0f} us  8 MB {entry['big'][-1]:.1f} ms  "
                    f"cpu {entry['cpu_big'][-1]:.1f} ms",
                    flush=True,
                )

    lines = [
        f"Command: `.venv/bin/python bench/proxy.py --rounds {args.rounds} --duration {args.duration} "
        f"--connections {args.connections}{' --baseline ' + args.baseline if args.baseline else ''}"
        f"{' --only ' + ','.join(sorted(args.only)) if args.only else ''}"
        f"{' --ws-only' if args.ws_only else ''}`; "
        f"{info['nginx']}; wrk -t1 -c{args.connections}; asset `{asset}`; "
        f"{os.cpu_count()} cores; load average "
        + (f"during the HTTP runs {min(load):.1f} to {max(load):.1f}, " if load else "")
        + f"during the WebSocket rounds {min(ws_load):.1f} to {max(ws_load):.1f}.",
        "",
    ]
    for label in [] if args.ws_only else paths:
        ref = statistics.median(r.rps for r in http[(label, "nginx")])
        ref_p50 = statistics.median(r.p50_ms for r in http[(label, "nginx")])
        lines += [
            f"**HTTP `{paths[label][0]}`, {paths[label][1]} connection(s)** "
            f"(medians of {args.rounds} runs of {args.duration} s)",
            "",
            "| contender | req/s | vs nginx | p50 ms | p50 - nginx | p99 ms | CPU µs/req (contender) | CPU µs/req (marimo) | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for contender in contenders:
            runs = http.get((label, contender.name))
            if not runs:
                continue
            rps = statistics.median(r.rps for r in runs)
            p50 = statistics.median(r.p50_ms for r in runs)
            lines.append(
                f"| {contender.name} | {rps:.0f} | {fmt_ratio(rps, ref)} | {p50:.2f} | "
                f"{p50 - ref_p50:+.2f} | {statistics.median(r.p99_ms for r in runs):.2f} | "
                f"{statistics.median(r.cpu_us for r in runs):.0f} | "
                f"{statistics.median(r.marimo_cpu_us for r in runs):.0f} | "
                f"{sum(r.errors for r in runs)} |"
            )
        lines.append("")
    lines += [
        f"**WebSocket, to an echo backend** (medians of {args.rounds} rounds; "
        f"{args.ws_trips} round trips of 1 KB, {args.ws_big} messages of 8 MB per round)",
        "",
        "| contender | 1 KB RTT p50 ms | vs nginx | 1 KB RTT p99 ms | CPU µs per 1 KB trip "
        "| 8 MB pass ms | 8 MB vs nginx | CPU ms per 8 MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ref_big = statistics.median(ws["nginx"]["big"])
    ref_p50 = statistics.median(ws["nginx"]["p50"])
    for name, entry in ws.items():
        big = statistics.median(entry["big"])
        p50 = statistics.median(entry["p50"])
        lines.append(
            f"| {name} | {p50:.3f} | {fmt_ratio(p50, ref_p50)} | "
            f"{statistics.median(entry['p99']):.3f} | {statistics.median(entry['cpu']):.0f} | "
            f"{big:.1f} | {fmt_ratio(big, ref_big)} | {statistics.median(entry['cpu_big']):.1f} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
