"""Nobody gets in without being allowed; allowed people get in without friction.

The orchestrator's web side in this process (tests/support/in_process.py: the real application,
guard and bounded server on 127.0.0.1, a stand-in marimo behind the proxy); one instance in
token mode serves the whole bypass corpus (nothing here changes its state); Quix mode runs
against the fake portal. One test signs in to a real orchestrator and reaches real marimo's page
and WebSocket, so the wiring of the real process stays covered.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.web
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from orchestrator.trust.session_crypto import binding
from tests.support.in_process import InProcess, InProcessFactory, serving
from tests.support.notebooks import NOTEBOOK
from tests.support.orchestrator import OrchestratorFactory, hermetic_env
from tests.support.quix_portal import FakeQuixPortal
from tests.support.sign_in import COOKIE, HTML, cookie_of, first_events, login, request


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    """The web side in this process, token mode, marimo (the stand-in) up."""
    root = tmp_path_factory.mktemp("auth")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    (notebooks / "notebook.py").write_text(NOTEBOOK)
    with serving(notebooks, root / "state", hermetic_env()) as run:
        run.wait_ready()
        yield run


def test_probes_and_login_are_public_everything_else_is_not(served: InProcess) -> None:
    assert served.get("/-/healthy", signed_in=False)[0] == 200
    assert served.get("/-/ready", signed_in=False)[0] == 200
    assert served.get("/-/login", HTML, signed_in=False)[0] == 200
    for path in ("/-/status", "/-/events", "/-/loading", "/", "/api/status", "/health"):
        code, _, body = request(served, "GET", path)
        assert code == 401, (path, code)
        assert b"marimo" not in body.lower().replace(b"marimo-orchestrator", b"")
    code, headers, _ = request(served, "GET", "/notebook?file=a.py", HTML)
    assert code == 302
    assert headers["location"] == "/-/login?next=%2Fnotebook%3Ffile%3Da.py"
    assert (
        request(
            served,
            "POST",
            "/-/restart",
            {"Content-Type": "application/json"},
            b'{"scope":"marimo"}',
        )[0]
        == 401
    )


def test_bearer_and_login_form(served: InProcess) -> None:
    assert served.get("/-/status")[0] == 200
    assert (
        request(served, "GET", "/-/status", {"Authorization": "Bearer wrong-token-value"})[0] == 401
    )
    code, _, body = login(served, "wrong-token-value")
    assert code == 401 and b"That token was not accepted" in body
    code, headers, _ = login(served, served.token, "/-/status")
    assert code == 303 and headers["location"] == "/-/status"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert served.token not in cookie
    code, _, body = request(served, "GET", "/-/status", {"Cookie": cookie_of(headers)})
    assert code == 200 and json.loads(body)["ready"] is True
    code, _, body = request(
        served, "GET", "/?file=notebook.py", {"Cookie": cookie_of(headers), **HTML}
    )
    assert code == 200 and b"<marimo-" in body


def test_the_login_url_pasted_into_the_form_signs_in_and_a_doubtful_one_is_refused(
    served: InProcess,
) -> None:
    """What the terminal prints, pasted whole into the token field (other parameters, a
    trailing slash, spaces); a URL of the sign-in page whose token is missing, empty or
    repeated is refused like a wrong token, never guessed at."""
    token = urllib.parse.quote(served.token)
    printed = f"http://localhost:{served.port}/-/login?token={token}"
    assert login(served, served.token)[0] == 303  # (a clean throttle record for this client)
    for doubtful in (
        f"http://localhost:{served.port}/-/login?next=%2F",
        f"http://localhost:{served.port}/-/login?token={token}&token={token}",
        f"http://localhost:{served.port}/-/login?token=",
        f"http://localhost:{served.port}/-/loading?token={token}",
    ):
        code, headers, body = login(served, doubtful)
        assert code == 401 and b"That token was not accepted" in body, doubtful
        assert "set-cookie" not in headers, doubtful
    for pasted in (
        printed,
        f"  {printed}\n",
        f"http://127.0.0.1:{served.port}/-/login/?next=%2F&token={token}",
        f"/-/login?token={token}",
    ):
        code, headers, _ = login(served, pasted, "/-/status")
        assert code == 303 and headers["location"] == "/-/status", pasted
        code, _, _ = request(served, "GET", "/-/status", {"Cookie": cookie_of(headers)})
        assert code == 200, pasted
    assert served.token not in served.log_text()


def test_tokens_in_the_wrong_place_are_refused(served: InProcess) -> None:
    token = served.token
    for path, headers in (
        (f"/-/status?token={token}", {}),
        (f"/?token={token}", {}),
        (f"/-/status?access_token={token}", {}),
        ("/-/status", {"Cookie": f"token={token}"}),
        ("/-/status", {"Cookie": f"{COOKIE}={token}"}),
        ("/-/status", {"Authorization": token}),
        ("/-/status", {"Authorization": f"Token {token}"}),
        ("/-/status", {"X-Auth-Token": token}),
    ):
        assert request(served, "GET", path, headers)[0] == 401, (path, headers)


def test_forged_resigned_and_expired_cookies_are_refused(served: InProcess, tmp_path: Path) -> None:
    _, headers, _ = login(served, served.token)
    genuine = cookie_of(headers)
    # Our own route, and marimo's (a session's GET to marimo is checked without RequestHandler:
    # proxy/direct.py).
    for path in ("/-/status", "/health"):
        assert request(served, "GET", path, {"Cookie": genuine})[0] == 200, path
    name, _, value = genuine.partition("=")
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    other = tornado.web.create_signed_value(
        b"x" * 48, COOKIE, json.dumps({"sid": "s", "iat": time.time()})
    )
    secret = (served.state_dir / "session-secret").read_bytes()
    old = tornado.web.create_signed_value(
        secret, COOKIE, json.dumps({"sid": "s", "iat": time.time() - 9 * 3600})
    )
    future = tornado.web.create_signed_value(
        secret, COOKIE, json.dumps({"sid": "s", "iat": time.time() + 3600})
    )
    unbound = tornado.web.create_signed_value(
        secret, COOKIE, json.dumps({"sid": "s", "iat": time.time()})
    )
    other_token = tornado.web.create_signed_value(
        secret,
        COOKIE,
        json.dumps({"sid": "s", "iat": time.time(), "cb": binding(secret, "another-token-1")}),
    )
    for forged in (
        "garbage",
        tampered,
        other.decode(),
        old.decode(),
        future.decode(),
        unbound.decode(),
        other_token.decode(),
    ):
        for path in ("/-/status", "/health"):
            code = request(served, "GET", path, {"Cookie": f"{name}={forged}"})[0]
            assert code == 401, (forged, path)
    fresh = tornado.web.create_signed_value(
        secret,
        COOKIE,
        json.dumps({"sid": "s", "iat": time.time(), "cb": binding(secret, served.token)}),
    )
    assert request(served, "GET", "/-/status", {"Cookie": f"{name}={fresh.decode()}"})[0] == 200, (
        "the persistent secret is the one that signs (control case)"
    )


def test_path_tricks_do_not_reach_anything_protected(served: InProcess) -> None:
    for path in (
        "//-/status",
        "/-/../-/status",
        "/-/./status",
        "/-/%73tatus",
        "/%2D/status",
        "/-%2Fstatus",
        "/-/status/",
        "/-/STATUS",
        "/-/healthy/../status",
        "/-/ready/../../-/status",
        "/-/login/../status",
        "/-/static/../../status",
    ):
        code, _, body = request(served, "GET", path)
        assert code in (400, 401, 403, 404), (path, code)
        assert b'"boot_id"' not in body, path


def test_websocket_upgrades_need_a_session_and_our_origin(served: InProcess) -> None:
    url = served.base.replace("http", "ws") + "/ws?session_id=s_auth_1&file=notebook.py"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=10).close()
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as foreign:
        connect(
            url, open_timeout=10, origin="https://evil.example", additional_headers=served.auth
        ).close()  # type: ignore[arg-type]
    assert foreign.value.response.status_code == 403
    with connect(url, open_timeout=30, origin=served.base, additional_headers=served.auth) as ws:  # type: ignore[arg-type]
        assert json.loads(ws.recv(timeout=60))


def test_cross_site_posts_are_refused(served: InProcess) -> None:
    _, headers, _ = login(served, served.token)
    cookie = cookie_of(headers)
    evil = {"Cookie": cookie, "Origin": "https://evil.example", "Content-Type": "application/json"}
    assert request(served, "POST", "/-/restart", evil, b'{"scope":"install"}')[0] == 403
    simple = {"Cookie": cookie, "Content-Type": "text/plain"}
    assert request(served, "POST", "/-/restart", simple, b'{"scope":"install"}')[0] == 415
    assert (
        request(served, "POST", "/-/logout", {"Cookie": cookie, "Origin": "https://evil.example"})[
            0
        ]
        == 403
    )
    form = urllib.parse.urlencode({"token": served.token}).encode()
    evil_login = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Origin": "https://evil.example",
    }
    assert request(served, "POST", "/-/login", evil_login, form)[0] == 403


def test_redirects_stay_on_this_server_and_headers_cannot_be_injected(served: InProcess) -> None:
    for target in (
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "/%0d%0aSet-Cookie:%20x=1",
    ):
        code, headers, _ = login(served, served.token, urllib.parse.unquote(target))
        assert code in (303, 400), target
        if code == 303:
            assert headers["location"].startswith("/") and not headers["location"].startswith("//")
            assert "\r" not in headers["location"] and "\n" not in headers["location"]
            assert "x=1" not in headers.get("set-cookie", "").split(";", 1)[0]


def test_oversized_headers_are_refused_and_the_server_survives(served: InProcess) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /-/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert not answer.startswith(b"HTTP/1.1 200")
    assert served.get("/-/healthy")[0] == 200


def test_logout_revokes_the_session(served: InProcess) -> None:
    _, headers, _ = login(served, served.token)
    cookie = cookie_of(headers)
    assert request(served, "GET", "/-/status", {"Cookie": cookie})[0] == 200
    assert request(served, "GET", "/health", {"Cookie": cookie})[0] == 200
    code, _, _ = request(served, "POST", "/-/logout", {"Cookie": cookie, "Origin": served.base})
    assert code == 303
    assert request(served, "GET", "/-/status", {"Cookie": cookie})[0] == 401
    assert request(served, "GET", "/health", {"Cookie": cookie})[0] == 401


def test_framing_defaults_to_same_origin(served: InProcess) -> None:
    for path in ("/-/login", "/"):
        _, headers, _ = served.get(path, HTML)
        assert "frame-ancestors 'self'" in headers.get("Content-Security-Policy", ""), (
            path,
            headers,
        )
        assert "X-Frame-Options" not in headers
    # A browser with a session: marimo's pages and API through the proxy's fast path.
    _, headers, _ = login(served, served.token)
    cookie = cookie_of(headers)
    for path, accept in (("/?file=notebook.py", HTML), ("/health", {})):
        code, headers, _ = request(served, "GET", path, {"Cookie": cookie, **accept})
        assert code == 200, path
        assert "frame-ancestors 'self'" in headers.get("content-security-policy", ""), path
        assert headers.get("x-content-type-options") == "nosniff", path
        assert "x-frame-options" not in headers, path


def test_no_secret_reaches_logs_status_events_or_pages(served: InProcess) -> None:
    token = served.token
    login(served, token)
    request(served, "GET", f"/-/login?token={token}&next=%2F")
    pages = [served.get(path, HTML)[2] for path in ("/", "/-/loading", "/-/login", "/-/status")]
    haystacks = [served.log_text().encode(), *pages, first_events(served)]
    for haystack in haystacks:
        assert token.encode() not in haystack
        assert b"access_token=" not in haystack.replace(b"access_token=***", b"")


def test_sessions_survive_a_restart(
    in_process: InProcessFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    first = in_process(notebook_dir, state)
    first.wait_listening()
    _, headers, _ = login(first, first.token)
    cookie = cookie_of(headers)
    # The secret is written once the state step has the folder (never before the port answers).
    first.wait_for(lambda s: s["state"]["path"] == str(state), what="state resolved")
    assert (state / "session-secret").stat().st_mode & 0o777 == 0o600
    assert first.terminate() == 0
    second = in_process(notebook_dir, state, "--token", first.token)
    second.wait_listening()
    assert request(second, "GET", "/-/status", {"Cookie": cookie})[0] == 200


def test_a_generated_token_is_printed_once_with_a_login_url(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    run = in_process(notebook_dir, None, "--auth", "token")
    run.wait_listening()
    lines = [line for line in run.log_text().splitlines() if "Sign in with:" in line]
    assert len(lines) == 1
    url = lines[0].split("Sign in with: ", 1)[1]
    # The address it listens on (the cookie it sets is for that host), not "localhost".
    assert url.startswith(f"http://127.0.0.1:{run.port}/-/login?token="), url
    code, headers, _ = request(run, "GET", url.split(str(run.port), 1)[1])
    assert code == 302 and headers["location"] == "/"
    assert request(run, "GET", "/-/status", {"Cookie": cookie_of(headers)})[0] == 200


def test_a_session_made_with_a_generated_token_survives_a_restart(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    """A generated token is new at every start without anyone rotating it: the open tab's
    session outlives the restart (a token given with --token binds its sessions instead)."""
    first = in_process(notebook_dir, None, "--auth", "token")
    first.wait_listening()
    url = next(line for line in first.log_text().splitlines() if "Sign in with:" in line)
    first.token = url.split("token=", 1)[1].strip()  # what first.status() sends
    code, headers, _ = request(first, "GET", url.split(str(first.port), 1)[1])
    assert code == 302
    cookie = cookie_of(headers)
    # Signed with the secret kept on the state volume once the state step has adopted it.
    first.wait_for(lambda s: s["state"]["path"] is not None, what="state resolved")
    assert first.terminate() == 0
    second = in_process(notebook_dir, None, "--auth", "token", port=first.port)
    second.wait_listening()
    assert request(second, "GET", "/-/status", {"Cookie": cookie})[0] == 200


def test_none_mode_is_open_and_warns_beyond_loopback(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    run = in_process(notebook_dir, None, "--auth", "none", "--host", "0.0.0.0")
    run.wait_listening()
    assert run.get("/-/status", signed_in=False)[0] == 200
    assert "--auth none on 0.0.0.0" in run.log_text()


@pytest.fixture
def portal() -> Iterator[FakeQuixPortal]:
    with FakeQuixPortal() as fake:
        yield fake


def test_quix_mode_validates_with_the_portal_and_caches(
    in_process: InProcessFactory, notebook_dir: Path, portal: FakeQuixPortal
) -> None:
    run = in_process(notebook_dir, None, "--auth", "quix", env=portal.env())
    run.token = "quix-user-pat-123456"
    portal.state.allowed_tokens.add(run.token)
    run.wait_listening()
    assert run.get("/-/status")[0] == 200
    assert run.get("/-/status")[0] == 200
    assert portal.state.permission_queries() == 1, "a yes is cached"
    query = next(c for c in portal.state.calls if str(c["path"]).startswith("/auth/permissions"))
    assert query["x_version"] == "2.0"
    assert query["query"]["resourceId"] == ["ws-test"] and query["query"]["permissions"] == ["Read"]
    assert request(run, "GET", "/-/status", {"Authorization": "Bearer not-a-quix-user"})[0] == 401
    portal.state.body_shape = "boolean"
    assert request(run, "GET", "/-/status", {"Authorization": "Bearer another-stranger"})[0] == 401
    _, headers, body = request(run, "GET", "/-/login", HTML)
    assert b"Quix Personal Access Token" in body or b'data-mode="quix"' in body
    assert "frame-ancestors *" in headers["content-security-policy"]
    code, headers, _ = login(run, run.token)
    assert code == 303
    cookie = headers["set-cookie"]
    assert "Secure" in cookie and "SameSite=None" in cookie
    # The portal goes down: people with a session stay in, new tokens cannot be checked.
    portal.state.down = True
    assert request(run, "GET", "/-/status", {"Cookie": cookie_of(headers)})[0] == 200
    assert request(run, "GET", "/-/status", {"Authorization": "Bearer brand-new-token"})[0] == 503
    assert run.token not in run.log_text()


def test_a_token_mode_page_other_sites_may_frame_gets_a_cross_site_cookie(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    """Inside another site's frame a Lax cookie is never sent back: sign-in would loop."""
    framed = in_process(notebook_dir, None, "--frame-ancestors", "https://portal.example")
    framed.wait_listening()
    code, headers, _ = request(framed, "GET", f"/-/login?token={framed.token}")
    assert code == 302
    attributes = {part.strip().lower() for part in headers["set-cookie"].split(";")}
    assert {"secure", "samesite=none", "partitioned", "httponly"} <= attributes, headers


def test_a_visit_to_the_front_page_opens_the_notebook(
    in_process: InProcessFactory, tmp_path: Path
) -> None:
    """One notebook: it opens; several: main.py; --open names it; marimo's own URLs and API
    calls to / pass as they were; a visitor not signed in learns nothing about the folder."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook = 'import marimo\n\napp = marimo.App()\n\nif __name__ == "__main__":\n    app.run()\n'
    (folder / "only.py").write_text(notebook)
    (folder / "helpers.py").write_text("def helper():\n    return 1\n")  # not a notebook
    run = in_process(folder)
    run.wait_listening()
    code, headers, _ = request(run, "GET", "/", {**HTML, **run.auth})
    assert (code, headers["location"]) == (302, "/?file=only.py")
    assert request(run, "GET", "/", HTML)[0] == 302  # not signed in: the sign-in page
    assert "only.py" not in request(run, "GET", "/", HTML)[1]["location"]

    (folder / "main.py").write_text(notebook)
    (folder / "other.py").write_text(notebook)
    code, headers, _ = request(run, "GET", "/", {**HTML, **run.auth})
    assert (code, headers["location"]) == (302, "/?file=main.py")
    code, headers, _ = request(run, "GET", "/?file=other.py", {**HTML, **run.auth})
    assert "location" not in headers  # marimo's own URL: not ours to change
    # From inside marimo (its home link, the app's "Back"): the file list that was asked for.
    inside = {**HTML, **run.auth, "Referer": f"{run.base}/?file=main.py"}
    assert "location" not in request(run, "GET", "/", inside)[1]
    # From the sign-in or status page: the notebook.
    ours = {**HTML, **run.auth, "Referer": f"{run.base}/-/loading"}
    assert request(run, "GET", "/", ours)[1]["location"] == "/?file=main.py"
    assert request(run, "GET", "/", {"Accept": "application/json", **run.auth})[0] != 302

    chosen = in_process(folder, tmp_path / "state2", "--open", "other.py")
    chosen.wait_listening()
    code, headers, _ = request(chosen, "GET", "/", {**HTML, **chosen.auth})
    assert (code, headers["location"]) == (302, "/?file=other.py")


def test_a_signed_in_browser_reaches_marimo_through_a_real_orchestrator(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    """The real process end to end: sign in, the cookie, marimo's own page through the proxy,
    then a notebook's WebSocket with the cookie alone (a browser's upgrade)."""
    run = orchestrator(notebook_dir)
    run.wait_ready()
    page = "/?file=notebook.py"
    code, headers, _ = request(run, "GET", page, HTML)
    assert code == 302 and headers["location"].startswith("/-/login?next=")
    code, headers, _ = login(run, run.token, page)
    assert code == 303 and headers["location"] == page
    cookie = cookie_of(headers)
    code, _, body = request(run, "GET", page, {"Cookie": cookie, **HTML})
    assert code == 200 and b"<marimo-server-token" in body, body[:300]
    url = run.base.replace("http", "ws") + "/ws?session_id=s_e2e_1&file=notebook.py"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=30, origin=run.base).close()  # type: ignore[arg-type]
    assert refused.value.response.status_code == 401
    with connect(
        url,
        open_timeout=60,
        origin=run.base,  # type: ignore[arg-type]
        additional_headers={"Cookie": cookie},
    ) as ws:
        ops = []
        while "kernel-ready" not in ops:
            ops.append(json.loads(ws.recv(timeout=60))["op"])
