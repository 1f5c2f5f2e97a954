"""marimo's editor loaded in Chromium over an emulated link: the orchestrator against bare marimo.

    .venv/bin/python bench/editor_load.py [--rounds 5] [--mbit 20] [--latency 40]
                                          [--throttle link|devtools]
                                          [--only first|repeat] [--trace FILE] [--load N]
                                          [--settle]

Contenders, one notebook, alternating every round (order rotated):

* ``orchestrator``: ``python -m orchestrator --auth none`` on a fresh state, the editor at
  ``/?file=notebook.py``.
* ``marimo``: a bare ``python -m marimo edit notebook.py --headless --no-token``, at ``/``.

Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright. The link (``--mbit`` Mbit/s
down and up, ``--latency`` ms round trip) is, by default (``--throttle link``), a relay on
127.0.0.1 in front of each contender (tests/support/slow_link.py: one shared line per direction,
a round trip per new connection). ``--throttle devtools`` uses Chromium's DevTools network
emulation (``Network.emulateNetworkConditions``) instead: that one leaves a page load pending
forever now and then on a busy machine, against any server (bench/RESULTS.md).

* **first visit**: a fresh browser context, cache disabled (``Network.setCacheDisabled``).
* **repeat visit**: a fresh context, cache on; one visit fills the cache (not measured), then the
  measured one.

A visit is timed from navigation to the editor showing the notebook's cell (its code in a
CodeMirror editor) *and* the page's ``load`` event; a visit that has not finished within 60 s
counts as unfinished (its pending requests are printed). Bytes are the sum of
``encodedDataLength`` over the visit's responses (what crossed the emulated link, headers
included); ``from cache`` counts responses the browser served from its cache.

``--trace FILE`` also takes a Chromium trace of one first visit through the orchestrator and
prints the breakdown (requests, bytes, round trips on the critical path, main-thread script time,
dynamic imports). ``--load N`` runs N busy-loop processes meanwhile (other work on the machine).
``--settle`` waits, after the untimed visits, until the orchestrator has compressed every asset
they fetched (``proxy/precompressed.py``: its ``incoming/`` folder empty), so the timed visits
measure the steady state rather than the first minutes after a new marimo version.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.processes import terminate_tree  # noqa: E402
from tests.support.orchestrator import free_port, hermetic_env  # noqa: E402
from tests.support.slow_link import SlowLink  # noqa: E402

PYTHON = sys.executable
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
]
NOTEBOOK = (
    "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n"
    "    greeting = 'hello from the benchmark'\n    return\n"
)
CELL_TEXT = "hello from the benchmark"
VISIT_TIMEOUT = 60.0


@dataclass
class Visit:
    seconds: float | None
    bytes: int
    requests: int
    from_cache: int
    pending: list[str] = field(default_factory=list)


@dataclass
class Contender:
    name: str
    url: str
    first: list[Visit] = field(default_factory=list)
    repeat: list[Visit] = field(default_factory=list)


def wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # an external process coming up: nothing to wait on but its port
    raise SystemExit(f"{url} did not answer 200 within {timeout} s")


class Processes:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.work / f"{name}.log").open("wb")
        self.started.append(
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.work,
                start_new_session=True,
            )
        )

    def stop_all(self) -> None:
        for process in reversed(self.started):
            terminate_tree(process.pid, timeout=15)
            process.wait()


def emulate(page: Any, args: argparse.Namespace, *, cache: bool) -> Any:
    """A DevTools session on ``page`` (the link emulated in it with ``--throttle devtools``)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    if args.throttle == "devtools":
        rate = args.mbit * 1_000_000 / 8
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": args.latency,
                "downloadThroughput": rate,
                "uploadThroughput": rate,
            },
        )
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": not cache})
    return cdp


class Recorder:
    """Bytes and requests of one visit, from the DevTools network events."""

    def __init__(self, cdp: Any) -> None:
        self.urls: dict[str, str] = {}
        self.done: set[str] = set()
        self.bytes = 0
        self.from_cache = 0
        self.initiators: dict[str, str] = {}
        self.types: dict[str, str] = {}
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.loadingFinished", self._finished)
        cdp.on("Network.loadingFailed", self._failed)
        cdp.on("Network.requestServedFromCache", lambda e: self._cached())
        cdp.on("Network.responseReceived", self._response)

    def _sent(self, event: dict[str, Any]) -> None:
        self.urls[event["requestId"]] = event["request"]["url"]
        self.initiators[event["requestId"]] = event.get("initiator", {}).get("type", "")
        self.types[event["requestId"]] = event.get("type", "")

    def _response(self, event: dict[str, Any]) -> None:
        response = event["response"]
        if response.get("fromDiskCache") or response.get("fromMemoryCache"):
            self.from_cache += 1

    def _cached(self) -> None:
        pass

    def _finished(self, event: dict[str, Any]) -> None:
        self.done.add(event["requestId"])
        self.bytes += int(event.get("encodedDataLength", 0))

    def _failed(self, event: dict[str, Any]) -> None:
        self.done.add(event["requestId"])

    def pending(self) -> list[str]:
        return [
            url
            for rid, url in self.urls.items()
            if rid not in self.done
            and not url.startswith(("ws:", "data:"))
            and "/-/events" not in url
        ]


def one_visit(page: Any, cdp: Any, url: str) -> Visit:
    recorder = Recorder(cdp)
    start = time.monotonic()
    seconds: float | None = None
    try:
        page.goto(url, wait_until="load", timeout=VISIT_TIMEOUT * 1000)
        remaining = VISIT_TIMEOUT - (time.monotonic() - start)
        page.get_by_text(CELL_TEXT).first.wait_for(
            state="visible", timeout=max(remaining, 0.1) * 1000
        )
        seconds = time.monotonic() - start
    except Exception as error:  # a load that never ends: recorded, not raised
        print(f"  unfinished visit of {url}: {type(error).__name__}", flush=True)
    return Visit(
        seconds,
        recorder.bytes,
        len(recorder.urls),
        recorder.from_cache,
        recorder.pending() if seconds is None else [],
    )


def first_visit(browser: Any, url: str, args: argparse.Namespace) -> Visit:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        cdp = emulate(page, args, cache=False)
        return one_visit(page, cdp, url)
    finally:
        context.close()


def repeat_visit(browser: Any, url: str, args: argparse.Namespace) -> Visit:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        cdp = emulate(page, args, cache=True)
        one_visit(page, cdp, url)
        page.goto("about:blank")
        return one_visit(page, cdp, url)
    finally:
        context.close()


def trace_first_visit(browser: Any, url: str, args: argparse.Namespace, path: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        cdp = emulate(page, args, cache=False)
        recorder = Recorder(cdp)
        browser.start_tracing(
            page=page,
            path=str(path),
            categories=["devtools.timeline", "v8", "v8.execute", "blink.user_timing", "loading"],
        )
        start = time.monotonic()
        page.goto(url, wait_until="load", timeout=VISIT_TIMEOUT * 1000)
        page.get_by_text(CELL_TEXT).first.wait_for(state="visible", timeout=VISIT_TIMEOUT * 1000)
        seconds = time.monotonic() - start
        browser.stop_tracing()
        breakdown(path, recorder, seconds)
    finally:
        context.close()


def breakdown(path: Path, recorder: Recorder, seconds: float) -> None:
    """Prints where a first visit's time goes, from the trace and the network events."""
    events = json.loads(path.read_text())
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    main_threads = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("name") == "thread_name" and e.get("args", {}).get("name") == "CrRendererMain"
    }
    totals: dict[str, float] = {}
    for e in events:
        if e.get("ph") != "X" or (e.get("pid"), e.get("tid")) not in main_threads:
            continue
        name = e.get("name", "")
        if name in (
            "EvaluateScript",
            "v8.compile",
            "v8.compileModule",
            "v8.evaluateModule",
            "FunctionCall",
            "v8.produceModuleCache",
            "ParseHTML",
            "UpdateLayoutTree",
            "Layout",
            "Paint",
            "MajorGC",
            "MinorGC",
            "V8.GCScavenger",
            "RunMicrotasks",
            "TimerFire",
            "EventDispatch",
        ):
            totals[name] = totals.get(name, 0.0) + e.get("dur", 0) / 1000
    kinds: dict[str, int] = {}
    for rid in recorder.urls:
        kind = f"{recorder.types.get(rid, '?')}/{recorder.initiators.get(rid, '?')}"
        kinds[kind] = kinds.get(kind, 0) + 1
    import marimo

    index = (Path(marimo.__file__).parent / "_static" / "index.html").read_text()
    preloaded = set(re.findall(r'href="\./assets/([^"]+)"', index))
    preloaded |= set(re.findall(r'src="\./assets/([^"]+)"', index))
    dynamic = [
        url
        for rid, url in recorder.urls.items()
        if "/assets/" in url
        and url.rsplit("/", 1)[-1] not in preloaded
        and url.endswith((".js", ".css"))
    ]
    print(f"\ntrace of one first visit: {path} ({seconds:.2f} s)")
    print(f"requests: {len(recorder.urls)}, bytes on the link: {recorder.bytes / 1e6:.2f} MB")
    print("requests by type/initiator: " + json.dumps(dict(sorted(kinds.items()))))
    print(f"scripts/styles not named in index.html (dynamic imports): {len(dynamic)}")
    for url in dynamic[:40]:
        print(f"  {url.rsplit('/', 1)[-1]}")
    print("main-thread time by event (ms, nested events overlap):")
    for name, ms in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {name:24} {ms:8.1f}")


def settle(browser_visits: list[Contender], args: argparse.Namespace, state: Path) -> None:
    """One untimed visit of the orchestrator, then waits until its compressed copies are made."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        for contender in browser_visits:
            if contender.name == "orchestrator":
                for _ in range(3):  # a visit that stalls (see RESULTS.md) fetched nothing
                    if first_visit(browser, contender.url, args).seconds is not None:
                        break
        browser.close()
    incoming = state / "cache" / "marimo-assets" / "incoming"
    start = time.monotonic()
    made, steady = -1, 0
    while time.monotonic() - start < 600 and steady < 5:
        time.sleep(1)  # another process's work: nothing to wait on but its files
        now = len(list(incoming.parent.glob("*.br")))
        changing = any(incoming.glob(".tee-*")) or now == 0 or now != made
        steady, made = (0 if changing else steady + 1), now
    copies = list(incoming.parent.glob("*.br"))
    print(
        f"settled: {len(copies)} assets compressed in {time.monotonic() - start:.0f} s after the"
        f" first visit ({sum(p.stat().st_size for p in copies) / 1e6:.2f} MB as brotli)",
        flush=True,
    )


def busy(n: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([PYTHON, "-c", "while True: pass"], start_new_session=True)
        for _ in range(n)
    ]


def summary(visits: list[Visit]) -> tuple[str, str, str, int]:
    done = [v.seconds for v in visits if v.seconds is not None]
    unfinished = len(visits) - len(done)
    if not done:
        return "-", "-", "-", unfinished
    mb = statistics.median(v.bytes for v in visits) / 1e6
    return (
        f"{statistics.median(done):.2f}",
        f"{min(done):.2f}-{max(done):.2f}",
        f"{mb:.2f}",
        unfinished,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mbit", type=float, default=20.0)
    parser.add_argument("--latency", type=float, default=40.0)
    parser.add_argument("--throttle", choices=("link", "devtools"), default="link")
    parser.add_argument("--only", choices=("first", "repeat"))
    parser.add_argument("--contenders", default="orchestrator,marimo")
    parser.add_argument("--trace", type=Path)
    parser.add_argument("--load", type=int, default=0)
    parser.add_argument("--settle", action="store_true")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-editor-"))
    procs = Processes(work)
    loaders: list[subprocess.Popen[bytes]] = []
    links: list[SlowLink] = []

    def reach(port: int) -> int:
        """The port the browser uses for a contender on ``port``: through the link, or direct."""
        if args.throttle == "devtools":
            return port
        links.append(SlowLink(port, mbit=args.mbit, latency_ms=args.latency))
        return links[-1].port

    try:
        (work / "notebooks").mkdir()
        (work / "notebooks" / "notebook.py").write_text(NOTEBOOK)
        (work / "bare").mkdir()
        (work / "bare" / "notebook.py").write_text(NOTEBOOK)
        env = hermetic_env({"MARIMO_SKIP_UPDATE_CHECK": "1"})
        contenders: list[Contender] = []
        wanted = args.contenders.split(",")
        if "orchestrator" in wanted:
            port = free_port()
            procs.start(
                "orchestrator",
                [
                    *(PYTHON, "-m", "orchestrator", str(work / "notebooks")),
                    *("--host", "127.0.0.1", "--port", str(port)),
                    *("--state-dir", str(work / "state"), "--auth", "none"),
                ],
                {**env, "PYTHONPATH": str(ROOT)},
            )
            wait_http(f"http://127.0.0.1:{port}/-/ready")
            contenders.append(
                Contender("orchestrator", f"http://127.0.0.1:{reach(port)}/?file=notebook.py")
            )
        if "marimo" in wanted:
            port = free_port()
            procs.start(
                "marimo",
                [
                    *(PYTHON, "-m", "marimo", "edit", str(work / "bare" / "notebook.py")),
                    *("--headless", "--no-token", "--skip-update-check"),
                    *("--host", "127.0.0.1", "-p", str(port)),
                ],
                {**env, "HOME": str(work / "bare")},
            )
            wait_http(f"http://127.0.0.1:{port}/health")
            contenders.append(Contender("marimo", f"http://127.0.0.1:{reach(port)}/"))
        if args.settle and "orchestrator" in wanted:
            settle(browser_visits=contenders, args=args, state=work / "state")
        loaders = busy(args.load)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            # One untimed visit each: marimo's first kernel start and the OS page cache.
            for contender in contenders:
                first_visit(browser, contender.url, args)
            for round_ in range(args.rounds):
                order = (
                    contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
                )
                for contender in order:
                    if args.only != "repeat":
                        visit = first_visit(browser, contender.url, args)
                        contender.first.append(visit)
                        print(f"round {round_ + 1} {contender.name} first: {visit}", flush=True)
                    if args.only != "first":
                        visit = repeat_visit(browser, contender.url, args)
                        contender.repeat.append(visit)
                        print(f"round {round_ + 1} {contender.name} repeat: {visit}", flush=True)
            if args.trace:
                trace_first_visit(browser, contenders[0].url, args, args.trace)
            browser.close()
        print(
            f"\nEditor load over {args.mbit:g} Mbit/s, {args.latency:g} ms ({args.throttle}),"
            f" {args.rounds} rounds"
            f" (load: {args.load} busy processes)\n"
        )
        print("| visit | contender | median s | min-max s | MB (median) | unfinished |")
        print("|---|---|---|---|---|---|")
        for kind in ("first", "repeat"):
            for contender in contenders:
                visits = getattr(contender, kind)
                if visits:
                    median, spread, mb, unfinished = summary(visits)
                    cached = statistics.median(v.from_cache for v in visits)
                    print(
                        f"| {kind} | {contender.name} | {median} | {spread} | {mb} | {unfinished}"
                        f" | from cache {cached:g}/{statistics.median(v.requests for v in visits):g}"
                    )
        by = {c.name: c for c in contenders}
        if "orchestrator" in by and "marimo" in by:
            for kind in ("first", "repeat"):
                ours = [v.seconds for v in getattr(by["orchestrator"], kind) if v.seconds]
                theirs = [v.seconds for v in getattr(by["marimo"], kind) if v.seconds]
                if ours and theirs:
                    ratio = statistics.median(ours) / statistics.median(theirs)
                    print(f"{kind} visit: orchestrator / bare marimo = {ratio:.2f}x")
        for contender in contenders:
            for visit in contender.first + contender.repeat:
                for url in visit.pending:
                    print(f"pending in an unfinished visit ({contender.name}): {url}")
    finally:
        for link in links:
            link.close()
        for loader in loaders:
            loader.kill()
            loader.wait()
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
