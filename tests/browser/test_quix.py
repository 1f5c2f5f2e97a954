"""Quix mode as its users meet it: inside the portal's iframe nobody types anything; on a direct
visit the Personal Access Token form lets the right people in and tells the others why not."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser.conftest import FULL_CHROMIUM
from tests.browser.ui import EDITOR_PATH, START_TIMEOUT, Shots, expect, write_notebook
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.support.quix_portal import FakeQuixPortal

CELL = """
import orch_alpha
orch_alpha.NAME
"""
USER_TOKEN = "pat-of-a-quix-user-0123456789"

BROWSER = FULL_CHROMIUM
"""The desktop Chromium, not the headless shell: in a fresh (off-the-record) profile it blocks
third-party cookies, as Chrome's Incognito does and Safari and Firefox do in their own ways,
which is what the cross-site frame tests here face. The headless shell lets them through
(:func:`test_this_browser_blocks_third_party_cookies_unless_partitioned` checks the premise)."""

PARENT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Quix portal (fake)</title></head>
<body>
<h1>Fake Quix portal</h1>
<iframe id="deployment" title="marimo" src="{src}" style="width:1200px;height:700px"></iframe>
<script>
  // What the portal does: answer the embedded page's REQUEST_AUTH_TOKEN with the user's token,
  // and only to the deployment's own origin.
  window.handshakes = 0;
  window.addEventListener("message", (event) => {{
    if (event.origin !== {origin} || !event.data || event.data.type !== "REQUEST_AUTH_TOKEN") return;
    window.handshakes += 1;
    event.source.postMessage({{ type: "AUTH_TOKEN", token: {token} }}, event.origin);
  }});
  // A hostile page framing the deployment does not wait to be asked: it pushes a token (its
  // own account's) at the frame over and over.
  if ({push}) {{
    setInterval(() => {{
      document.getElementById("deployment").contentWindow.postMessage(
        {{ type: "AUTH_TOKEN", token: {token} }}, "*");
    }}, 200);
  }}
</script>
</body></html>
"""


class ParentSite:
    """The portal's page, on its own local server: another origin than the orchestrator's.

    ``host="127.0.0.1"`` makes it same-site (another port: cookies are first-party);
    ``host="localhost"`` makes it cross-site, so the orchestrator's cookie is a third-party one.
    The server is bound first (the orchestrator is told its origin at start), the page is
    written once the orchestrator's address is known (:meth:`frame`).
    """

    def __init__(self, host: str) -> None:
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(site.body)))
                self.end_headers()
                self.wfile.write(site.body)

        self.host = host
        self.body = b""
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def frame(self, run: Orchestrator, push: bool = False, path: str = EDITOR_PATH) -> ParentSite:
        self.body = PARENT_PAGE.format(
            src=run.base + path,
            origin=json.dumps(run.base),
            token=json.dumps(USER_TOKEN),
            push=json.dumps(push),
        ).encode()
        return self

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return self.origin + "/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_this_browser_blocks_third_party_cookies_unless_partitioned(page: Any) -> None:
    """The premise of the cross-site tests below: a frame from another site that sets a plain
    ``SameSite=None`` cookie and a ``Partitioned`` one gets only the partitioned one back."""

    class CookieSite(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            port = self.server.server_address[1]
            self.send_response(200)
            if self.path == "/parent":  # on 127.0.0.1, framing the same server as localhost
                body = f'<iframe id="site" src="http://localhost:{port}/set"></iframe>'
            elif self.path == "/set":
                for cookie in ("plain=1", "partitioned=1; Partitioned"):
                    self.send_header("Set-Cookie", f"{cookie}; SameSite=None; Secure; Path=/")
                body = '<script>location = "/echo"</script>'
            else:
                body = f"<pre id=sent>{self.headers.get('Cookie') or 'no cookie'}</pre>"
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body.encode())

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CookieSite)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/parent")
        expect(page.frame_locator("#site").locator("#sent")).to_have_text("partitioned=1")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def portal_pages() -> Iterator[dict[str, ParentSite]]:
    """The portal's pages, same-site and cross-site: the origins the deployment trusts."""
    sites = {"same-site": ParentSite("127.0.0.1"), "cross-site": ParentSite("localhost")}
    yield sites
    for site in sites.values():
        site.close()


@pytest.fixture
def quix_run(
    orchestrator: OrchestratorFactory,
    portal: FakeQuixPortal,
    portal_pages: dict[str, ParentSite],
    tmp_path: Path,
) -> Iterator[Orchestrator]:
    portal.state.allowed_tokens.add(USER_TOKEN)
    notebooks = write_notebook(tmp_path / "notebooks", CELL, requirements="orch-alpha\n")
    origins = ",".join(site.origin for site in portal_pages.values())
    run = orchestrator(
        notebooks, None, "--auth", "quix", "--portal-origins", origins, env=portal.env()
    )
    run.token = USER_TOKEN  # what run.get() and run.status() send
    run.wait_listening(timeout=30)
    yield run


def test_inside_the_portal_iframe_the_user_gets_in_without_typing(
    page: Any,
    shots: Shots,
    quix_run: Orchestrator,
    portal: FakeQuixPortal,
    portal_pages: dict[str, ParentSite],
) -> None:
    run = quix_run
    parent = portal_pages["same-site"].frame(run)
    page.goto(parent.url)
    frame = page.frame_locator("#deployment")
    # Signed in through postMessage, the iframe shows the loading page or, once ready, the
    # editor (the loading page returns there by itself); never the sign-in form for long.
    expect(frame.get_by_test_id("cell-editor").first).to_be_visible(timeout=START_TIMEOUT)
    assert page.evaluate("window.handshakes") == 1
    embedded = next(f for f in page.frames if f.url.startswith(run.base))
    assert embedded.url == run.base + EDITOR_PATH
    assert portal.state.permission_queries() >= 1
    # The session cookie that made it work, accepted although the site is plain http.
    cookies = page.context.cookies(run.base)
    session = next(c for c in cookies if c["name"] == "marimo_orchestrator_session")
    assert session["secure"] and session["sameSite"] == "None" and session["httpOnly"]


def test_in_a_cross_site_iframe_the_user_gets_in_once(
    page: Any, shots: Shots, quix_run: Orchestrator, portal_pages: dict[str, ParentSite]
) -> None:
    """A cross-site parent makes the session cookie a third-party one, which this Chromium
    blocks by default unless it is ``Partitioned`` (CHIPS), as ours is in quix mode: the user
    gets into the editor after exactly one token exchange, and there is no reload loop."""
    run = quix_run
    parent = portal_pages["cross-site"].frame(run)
    page.goto(parent.url)
    frame = page.frame_locator("#deployment")
    expect(frame.get_by_test_id("cell-editor").first).to_be_visible(timeout=START_TIMEOUT)
    assert page.evaluate("window.handshakes") == 1
    cookies = page.context.cookies(run.base)
    session = next(c for c in cookies if c["name"] == "marimo_orchestrator_session")
    assert session["secure"] and session["sameSite"] == "None"


def test_a_page_that_is_not_the_portal_cannot_sign_the_frame_in(
    page: Any, shots: Shots, quix_run: Orchestrator, portal: FakeQuixPortal
) -> None:
    """Any site may frame the deployment (frame-ancestors * in quix mode); only the portal's
    pages may hand it a token. A foreign page pushing one is ignored, and is not even asked."""
    run = quix_run
    stranger = ParentSite("127.0.0.1").frame(run, push=True)
    try:
        queries = portal.state.permission_queries()
        page.goto(stranger.url)
        frame = page.frame_locator("#deployment")
        expect(frame.get_by_label("Quix Personal Access Token")).to_be_visible(timeout=30_000)
        # Many pushes later (one every 200 ms), still signed out, the portal never asked.
        page.wait_for_function("window.handshakes === 0 && performance.now() > 3000")
        expect(frame.get_by_label("Quix Personal Access Token")).to_be_visible()
        assert portal.state.permission_queries() == queries
        assert not any(
            c["name"] == "marimo_orchestrator_session" for c in page.context.cookies(run.base)
        )
        shots("foreign-parent-ignored")
    finally:
        stranger.close()


def test_outside_an_iframe_the_pat_form_refuses_a_wrong_token_and_admits_a_right_one(
    page: Any, shots: Shots, quix_run: Orchestrator
) -> None:
    run = quix_run
    page.goto(run.base + EDITOR_PATH)
    expect(page).to_have_url(re.compile(re.escape(run.base) + "/-/login"))
    field = page.get_by_label("Quix Personal Access Token")
    expect(page.get_by_role("status").filter(has_text="Signing you in")).to_be_hidden()

    field.fill("not-a-quix-token-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(
        "That token was not accepted. Check it and try again."
    )
    shots("refused")

    page.get_by_label("Quix Personal Access Token").fill(USER_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("cell-editor").first).to_be_visible(timeout=START_TIMEOUT)
    expect(page).to_have_url(run.base + EDITOR_PATH)


def test_the_environment_panel_works_in_the_portal_iframe_and_restarts_the_deployment(
    page: Any,
    shots: Shots,
    quix_run: Orchestrator,
    portal: FakeQuixPortal,
    portal_pages: dict[str, ParentSite],
) -> None:
    run = quix_run
    parent = portal_pages["cross-site"].frame(run)  # cross-site, as the portal is
    page.goto(parent.url)
    frame = page.frame_locator("#deployment")
    expect(frame.get_by_test_id("cell-editor").first).to_be_visible(timeout=START_TIMEOUT)
    frame.get_by_role("button", name=re.compile("^Environment")).click()
    panel = frame.get_by_role("region", name="Environment", exact=True)
    expect(panel).to_be_visible()
    panel.get_by_role("button", name="Restart deployment", exact=True).click()
    expect(panel).to_contain_text("Ask Quix to restart this deployment?")
    panel.get_by_role("button", name="Yes, restart deployment").click()
    notices = frame.get_by_role("region", name="Environment notices")
    expect(notices).to_contain_text("Quix accepted", timeout=30_000)
    shots("deployment-restart-asked")
    calls = [c for c in portal.state.calls if "deployments" in str(c["path"])]
    assert len(calls) == 1 and calls[0]["token"] == USER_TOKEN, calls


def test_token_mode_sign_in_works_inside_another_sites_frame(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    """``--frame-ancestors`` lets another site frame us: the ready-to-click sign-in link works
    inside its frame (the cookie is a partitioned cross-site one), and a wrong link says so."""
    notebooks = write_notebook(tmp_path / "notebooks", CELL, requirements="orch-alpha\n")
    run = orchestrator(notebooks, None, "--frame-ancestors", "*")
    run.wait_listening(timeout=30)
    wrong = ParentSite("localhost").frame(run, path="/-/login?token=not-the-token-at-all")
    try:
        page.goto(wrong.url)
        frame = page.frame_locator("#deployment")
        expect(frame.get_by_role("alert")).to_have_text(
            "That token was not accepted. Check it and try again."
        )
    finally:
        wrong.close()
    right = ParentSite("localhost").frame(
        run, path=f"/-/login?token={quote(run.token)}&next={quote(EDITOR_PATH, safe='')}"
    )
    try:
        page.goto(right.url)
        frame = page.frame_locator("#deployment")
        expect(frame.get_by_test_id("cell-editor").first).to_be_visible(timeout=START_TIMEOUT)
        shots("token-mode-in-a-frame")
    finally:
        right.close()
