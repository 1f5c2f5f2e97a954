"""Throttled first visits of marimo's index.html from a plain static server: does the page load end?

    .venv/bin/python bench/static_stall.py [--visits 40] [--throttle devtools|link] [--timeout 30]

No orchestrator and no marimo server: Python's ``http.server`` (HTTP/1.1, keep-alive) serves
marimo's own ``_static`` folder, and Debian's Chromium loads ``/index.html`` (the same 186
requests for modules, CSS, fonts and images as the editor's first wave) in a fresh context with
the cache off, over 20 Mbit/s and 40 ms: Chromium's DevTools network emulation (``devtools``) or
the relay of tests/support/slow_link.py (``link``). A visit whose ``load`` event has not fired
within ``--timeout`` seconds is unfinished; for each one the script prints the pending requests
and ``ss`` for both ends (who holds the unread bytes).
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.editor_load import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.support.slow_link import SlowLink  # noqa: E402


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


def one_visit(
    browser: Any, url: str, args: argparse.Namespace, ports: list[int]
) -> tuple[float | None, int, list[str]]:
    """Seconds to the ``load`` event (None: unfinished), requests sent, requests pending; for an
    unfinished visit, prints ``ss`` for both ends of ``ports`` while the browser still holds them."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        urls: dict[str, str] = {}
        done: set[str] = set()
        cdp.on(
            "Network.requestWillBeSent",
            lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]),
        )
        cdp.on("Network.loadingFinished", lambda e: done.add(e["requestId"]))
        cdp.on("Network.loadingFailed", lambda e: done.add(e["requestId"]))
        if args.throttle == "devtools":
            rate = 20_000_000 / 8
            cdp.send(
                "Network.emulateNetworkConditions",
                {
                    "offline": False,
                    "latency": 40,
                    "downloadThroughput": rate,
                    "uploadThroughput": rate,
                },
            )
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        start = time.monotonic()
        try:
            page.goto(url, wait_until="load", timeout=args.timeout * 1000)
        except Exception:  # a load that never ends: reported, not raised
            ends = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
            sockets = subprocess.run(["ss", "-tnpo", ends], capture_output=True, text=True)
            print(sockets.stdout, flush=True)
            return None, len(urls), [u for r, u in urls.items() if r not in done]
        return time.monotonic() - start, len(urls), []
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=40)
    parser.add_argument("--throttle", choices=("devtools", "link"), default="devtools")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    import marimo
    from playwright.sync_api import sync_playwright

    static = Path(marimo.__file__).parent / "_static"
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(static))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    link = SlowLink(port, mbit=20, latency_ms=40) if args.throttle == "link" else None
    ports = [port] if link is None else [port, link.port]
    url = f"http://127.0.0.1:{ports[-1]}/index.html"
    unfinished = 0
    took: list[float] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            for visit in range(args.visits):
                seconds, requests, pending = one_visit(browser, url, args, ports)
                if seconds is not None:
                    took.append(seconds)
                    print(f"visit {visit}: {seconds:.2f} s, {requests} requests", flush=True)
                    continue
                unfinished += 1
                print(
                    f"visit {visit}: UNFINISHED, {requests} requests, {len(pending)} pending,"
                    f" e.g. {pending[:3]}",
                    flush=True,
                )
            browser.close()
    finally:
        if link is not None:
            link.close()
        server.shutdown()
    median = sorted(took)[len(took) // 2] if took else float("nan")
    print(
        f"\n{args.throttle}: {unfinished} of {args.visits} visits unfinished"
        f" (median of the others {median:.2f} s)"
    )


if __name__ == "__main__":
    main()
