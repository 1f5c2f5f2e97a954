"""What an unauthenticated client can make the server do is bounded, and what a session is worth
ends with the credential it was made from (issue 15's findings, one test or more each).

The orchestrator's web side in this process (tests/support/in_process.py: the real application,
guard and bounded server on 127.0.0.1, a stand-in marimo behind the proxy), except where the
process itself or marimo is what is tested: SIGTERM, marimo's environment, the process's memory
(real orchestrators, marked ``marimo``). The Quix portal is the fake (tests/support/quix_portal.py).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import tornado.web
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from orchestrator.trust.session_crypto import binding
from tests.support.in_process import InProcess, InProcessFactory
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, OrchestratorFactory, hermetic_env
from tests.support.quix_portal import FakeQuixPortal
from tests.support.sign_in import COOKIE, HTML, Served, cookie_of, login, request

USER = "quix-user-pat-0123456789"


@pytest.fixture
def portal() -> Iterator[FakeQuixPortal]:
    with FakeQuixPortal() as fake:
        yield fake


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def quix(
    start: OrchestratorFactory | InProcessFactory,
    notebook_dir: Path,
    portal: FakeQuixPortal,
    state: Path | None = None,
    *args: str,
) -> Orchestrator | InProcess:
    portal.state.allowed_tokens.add(USER)
    env = portal.env()
    if state is not None:  # a volume Quix mounted: what is kept there persists
        env.update(
            {
                "Quix__Deployment__State__Path": str(state),
                "Quix__Deployment__State__Enabled": "true",
            }
        )
    run = start(notebook_dir, state, "--auth", "quix", *args, env=env)
    run.token = USER
    run.wait_listening()
    return run


def bearer(run: Served, token: str, path: str = "/-/status", client: str = "") -> int:
    """A Bearer request; ``client`` is the address a trusted proxy would forward (quix mode
    trusts one by default), so that many attempts are not one client's."""
    headers = {"Authorization": f"Bearer {token}"}
    if client:
        headers["X-Forwarded-For"] = client
    return request(run, "GET", path, headers)[0]


# -- 1. the Quix permission check fails closed ----------------------------------------------------


def test_the_quix_check_denies_every_answer_it_does_not_document(
    in_process: InProcessFactory, notebook_dir: Path, portal: FakeQuixPortal
) -> None:
    run = quix(in_process, notebook_dir, portal)
    denied = [
        (200, "text/html; charset=utf-8", b"<html><body>Sign in to continue</body></html>"),
        (200, "application/json", b"{}"),
        (200, "application/json", b"[]"),
        (200, "application/json", b'{"allowed": false}'),
        (200, "application/json", b'{"allowed": "true"}'),
        (200, "application/json", b"false"),
        (200, "text/plain", b"yes"),
        (302, "text/html", b""),  # to /elsewhere, a 200 "true": never followed
        (404, "application/json", b'{"error": "no such route"}'),
    ]
    for number, reply in enumerate(denied):
        portal.state.permission_reply = reply
        assert bearer(run, f"stranger-{number}", client=f"192.0.2.{number}") == 401, reply
    assert not any(call["path"] == "/elsewhere" for call in portal.state.calls)
    for number, reply in enumerate(
        [(200, "application/json", b"true"), (200, "application/json", b""), (200, "", b"")]
    ):
        portal.state.permission_reply = reply
        assert bearer(run, f"accepted-{number}", client=f"192.0.2.{50 + number}") == 200, reply
    # Warned about, once per shape, naming the status and the content type.
    portal.state.permission_reply = denied[0]
    assert bearer(run, "stranger-again", client="192.0.2.99") == 401
    log = run.log_text()
    assert log.count("HTTP 200 (Content-Type: text/html)") == 1, log
    assert "HTTP 302 (Content-Type: text/html)" in log
    assert "HTTP 404 (Content-Type: application/json)" in log


# -- 2. bounded before sign-in --------------------------------------------------------------------


def head_only(run: Served, head: bytes, timeout: float = 5) -> bytes:
    """Sends a request's head (no body) and returns what comes back before the server closes."""
    with socket.create_connection(("127.0.0.1", run.port), timeout=timeout) as sock:
        sock.sendall(head)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def test_bodies_on_our_routes_are_refused_from_their_headers(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    run = in_process(notebook_dir)
    run.wait_listening()
    rss_before = psutil.Process(run.pid).memory_info().rss
    for path in ("/-/login", "/-/logout", "/-/restart", "/-/status", "/-/healthy"):
        started = time.monotonic()
        answer = head_only(
            run,
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {64 * 1024 * 1024}\r\n\r\n".encode(),
        )
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:200])
        assert time.monotonic() - started < 2, "answered without waiting for the body"
    answer = head_only(
        run,
        b"POST /-/login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
    # Nine clients each sending 4 MB of a 64 MB body: nothing of it is kept.
    sockets = []
    for _ in range(9):
        sock = socket.create_connection(("127.0.0.1", run.port), timeout=10)
        sock.sendall(
            b"POST /-/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {64 * 1024 * 1024}\r\n\r\n".encode()
        )
        try:
            for _ in range(64):
                sock.sendall(b"x" * 65536)
        except OSError:
            pass  # the server answered 413 and closed: what should happen
        sockets.append(sock)
    grown = psutil.Process(run.pid).memory_info().rss - rss_before
    for sock in sockets:
        sock.close()
    print(f"RSS growth after 9 clients sent 4 MB of a 64 MB body each: {grown / 1e6:.1f} MB")
    assert grown < 32 * 1024 * 1024, f"the process grew by {grown / 1e6:.0f} MB"
    # A small body still works.
    assert login(run, run.token)[0] == 303


def test_slow_and_idle_unauthenticated_connections_are_cut_and_capped(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    run = in_process(notebook_dir)
    run.wait_listening()
    quiet = socket.create_connection(("127.0.0.1", run.port), timeout=30)
    slow = []
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", run.port), timeout=30)
        sock.sendall(b"GET /-/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        slow.append(sock)
    try:
        # Probes are still answered at once under that load.
        slowest = 0.0
        for _ in range(5):
            started = time.monotonic()
            code, _, _ = run.get("/-/healthy", timeout=5, signed_in=False)
            assert code == 200
            slowest = max(slowest, time.monotonic() - started)
        print(f"/-/healthy beside 300 unfinished requests: slowest of 5 {slowest * 1000:.1f} ms")
        assert slowest < 1.0
        # Past the cap, the oldest unauthenticated connections were closed to make room.
        closed = 0
        for sock in slow[:40]:
            sock.settimeout(2)
            try:
                closed += sock.recv(1) == b""
            except (ConnectionResetError, TimeoutError):
                closed += 1
        assert closed >= 30, closed
        # A connection that sends nothing is cut after the first-headers deadline.
        quiet.settimeout(20)
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert quiet.recv(1) == b""
        assert time.monotonic() - started < 15
    finally:
        quiet.close()
        for sock in slow:
            sock.close()
    # A signed-in client keeps its connection (it is no longer counted).
    connection = http.client.HTTPConnection("127.0.0.1", run.port, timeout=10)
    for _ in range(3):
        connection.request("GET", "/-/status", headers=run.auth)
        assert connection.getresponse().read() and True
    connection.close()


# -- 3. a hung portal delays nothing --------------------------------------------------------------


def test_sigterm_is_prompt_with_a_hung_portal_under_load(
    orchestrator: OrchestratorFactory, notebook_dir: Path, portal: FakeQuixPortal
) -> None:
    run = quix(orchestrator, notebook_dir, portal)
    portal.state.hanging = True
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=24)
    try:
        for number in range(12):
            pool.submit(bearer, run, f"token-to-check-{number}", "/-/status", f"192.0.2.{number}")
            form = urllib.parse.urlencode({"token": f"form-token-{number}"}).encode()
            pool.submit(
                request,
                run,
                "POST",
                "/-/login",
                {"Content-Type": "application/x-www-form-urlencoded", "Origin": run.base},
                form,
            )
        eventually(lambda: len(portal.state.calls) >= 4, 10, "the portal to be asked")
        started = time.monotonic()
        assert run.get("/-/healthy", timeout=5, signed_in=False)[0] == 200
        assert time.monotonic() - started < 1.0
        calls_at_once = len(portal.state.calls)
        started = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        code = run.process.wait(timeout=30)
        took = time.monotonic() - started
        assert code == 0
        assert took < 10, f"SIGTERM took {took:.1f} s"
        print(f"SIGTERM with a hung portal under load: {took:.2f} s")
        assert calls_at_once <= 4, "at most 4 portal calls at once"
    finally:
        portal.state.release.set()
        pool.shutdown(wait=True, cancel_futures=True)


# -- 4. sign-in throttling ------------------------------------------------------------------------


def wrong_login(run: Served, headers: dict[str, str] | None = None) -> tuple[int, str]:
    form = urllib.parse.urlencode({"token": "wrong-token-value"}).encode()
    code, answer, _ = request(
        run,
        "POST",
        "/-/login",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": run.base,
            **(headers or {}),
        },
        form,
    )
    return code, answer.get("retry-after", "")


def test_sign_in_is_throttled_per_client_and_the_right_token_works_after(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    run = in_process(notebook_dir, quix=False)  # no proxy in front is trusted
    run.wait_listening()
    codes = [wrong_login(run)[0] for _ in range(5)]
    assert codes == [401] * 5
    code, retry_after = wrong_login(run)
    assert code == 429 and int(retry_after) >= 1

    # Each failure once a block has passed doubles the next block (1, 2, 4 s): the client
    # keeps trying until it is blocked for 8 s, which the checks below need, under any load,
    # to run within one block.
    def blocked_for_eight_seconds() -> bool:
        code, retry_after = wrong_login(run)
        return code == 429 and int(retry_after) >= 8

    eventually(blocked_for_eight_seconds, 30, "the block to double up to 8 s")
    # Neither the right token nor a spoofed X-Forwarded-For (no proxy is trusted) gets past.
    assert login(run, run.token)[0] == 429
    assert wrong_login(run, {"X-Forwarded-For": "203.0.113.9"})[0] == 429
    assert bearer(run, "wrong-bearer-token") == 429
    for _ in range(50):
        assert wrong_login(run)[0] == 429
    # After the window, the right token gets in.
    eventually(lambda: login(run, run.token)[0] == 303, 30, "the throttle window to pass")
    log = run.log_text()
    assert "sign-in failed" in log
    assert log.count("/-/login") <= 2, "failures are not logged one line each"


def test_behind_a_trusted_proxy_clients_are_told_apart_under_a_global_ceiling(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    run = in_process(notebook_dir, None, "--trust-proxy")
    run.wait_listening()
    for _ in range(5):
        assert wrong_login(run, {"X-Forwarded-For": "10.0.0.1, 203.0.113.1"})[0] == 401
    assert wrong_login(run, {"X-Forwarded-For": "10.0.0.1, 203.0.113.1"})[0] == 429
    # Another client behind the same proxy is not held back by the first.
    form = urllib.parse.urlencode({"token": run.token, "next": "/"}).encode()
    code, _headers, _ = request(
        run,
        "POST",
        "/-/login",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": run.base,
            "X-Forwarded-For": "203.0.113.2",
        },
        form,
    )
    assert code == 303
    # Many clients each failing a little: the global ceiling stops them all.
    results = [
        wrong_login(run, {"X-Forwarded-For": f"198.51.{n // 250}.{n % 250}"})[0] for n in range(620)
    ]
    assert results[:590].count(401) >= 590
    assert results[-1] == 429


# -- 5. Host rules (DNS rebinding) ----------------------------------------------------------------


def with_host(run: Served, host: str, path: str = "/-/healthy") -> tuple[int, bytes]:
    """A GET whose only Host header is ``host`` (what a browser sends for a rebound name)."""
    connection = http.client.HTTPConnection("127.0.0.1", run.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_on_loopback_only_loopback_names_and_ip_literals_are_served(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    run = in_process(notebook_dir, None, "--allowed-hosts", "notebooks.example.test")
    run.wait_for(lambda _: True, what="the full server (the early one answers probes only)")
    for host in (
        "127.0.0.1",
        f"127.0.0.1:{run.port}",
        f"localhost:{run.port}",
        "[::1]:1",
        "10.1.2.3",
    ):
        assert with_host(run, host)[0] == 200, host
    assert with_host(run, "notebooks.example.test")[0] == 200
    for host in ("evil.example", f"rebind.evil.example:{run.port}", "notebooks.example.test.evil"):
        code, body = with_host(run, host)
        assert code == 403, host
        assert b"--allowed-hosts" in body and b"ORCHESTRATOR_ALLOWED_HOSTS" in body
    url = run.base.replace("http", "ws") + "/terminal/ws"
    with pytest.raises(InvalidStatus) as refused:
        connect(
            url, open_timeout=10, additional_headers={"Host": "evil.example", **run.auth}
        ).close()  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403


def test_auth_none_on_loopback_refuses_a_rebound_name(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    run = in_process(notebook_dir, None, "--auth", "none")
    run.wait_listening()
    assert with_host(run, "attacker.example", "/-/status")[0] == 403
    assert with_host(run, f"attacker.example:{run.port}", "/")[0] == 403
    assert with_host(run, f"127.0.0.1:{run.port}", "/-/status")[0] == 200


def test_beyond_loopback_allowed_hosts_apply_when_given(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    open_run = in_process(notebook_dir, None, "--auth", "none", "--host", "0.0.0.0")
    listed = in_process(
        notebook_dir,
        None,
        "--auth",
        "none",
        "--host",
        "0.0.0.0",
        "--allowed-hosts",
        "notebooks.example.test,*.apps.example.test",
    )
    for run in (open_run, listed):
        run.wait_for(lambda _: True, what="the full server")
    assert with_host(open_run, "anything.example", "/-/status")[0] == 200
    assert "--auth none on 0.0.0.0" in listed.log_text()
    assert with_host(listed, "notebooks.example.test", "/-/status")[0] == 200
    assert with_host(listed, "team.apps.example.test:8080", "/-/status")[0] == 200
    assert with_host(listed, "anything.example", "/-/status")[0] == 403
    assert with_host(listed, "192.0.2.7", "/-/status")[0] == 200


# -- 6. sessions end with their credentials -------------------------------------------------------


def test_logout_survives_a_restart_and_a_new_token_ends_old_sessions(
    in_process: InProcessFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    first = in_process(notebook_dir, state)
    first.wait_listening()
    first.wait_for(lambda s: s["state"]["path"] == str(state), what="state resolved")
    ended = cookie_of(login(first, first.token)[1])
    kept = cookie_of(login(first, first.token)[1])
    code, _, _ = request(first, "POST", "/-/logout", {"Cookie": ended, "Origin": first.base})
    assert code == 303
    assert request(first, "GET", "/-/status", {"Cookie": ended})[0] == 401
    assert first.terminate() == 0

    same = in_process(notebook_dir, state, "--token", first.token)
    same.wait_listening()
    assert request(same, "GET", "/-/status", {"Cookie": ended})[0] == 401
    assert request(same, "GET", "/-/status", {"Cookie": kept})[0] == 200
    assert same.terminate() == 0
    assert (state / "sessions-revoked").stat().st_mode & 0o777 == 0o600

    renewed = in_process(notebook_dir, state, "--token", "a-brand-new-access-token")
    renewed.wait_listening()
    for path in ("/-/status", "/health"):
        assert request(renewed, "GET", path, {"Cookie": kept})[0] == 401, path
    renewed.token = "a-brand-new-access-token"
    assert (
        request(
            renewed, "GET", "/-/status", {"Cookie": cookie_of(login(renewed, renewed.token)[1])}
        )[0]
        == 200
    )


def test_a_quix_session_ends_when_the_portal_stops_accepting_its_token(
    in_process: InProcessFactory, notebook_dir: Path, portal: FakeQuixPortal, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    run = quix(in_process, notebook_dir, portal, state, "--quix-recheck", "2")
    run.wait_for(lambda s: s["state"]["path"] == str(state), what="state resolved")
    code, headers, _ = login(run, USER)
    assert code == 303
    cookie = cookie_of(headers)
    assert USER not in headers["set-cookie"]
    assert request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 200
    queries = portal.state.permission_queries()
    # Within the re-check interval the portal is not asked again.
    assert request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 200
    assert portal.state.permission_queries() == queries
    # After a restart the session is still good: its sealed token is checked again.
    assert run.terminate() == 0
    run = quix(in_process, notebook_dir, portal, state, "--quix-recheck", "2")
    assert request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 200
    assert portal.state.permission_queries() > queries
    # Revoked at the portal: the session ends within the re-check interval.
    portal.state.allowed_tokens.discard(USER)
    eventually(
        lambda: request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 401,
        10,
        "the session to end",
    )
    portal.state.allowed_tokens.add(USER)
    assert request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 401, "ended for good"
    assert USER not in run.log_text()


def test_an_unreachable_portal_keeps_sessions_for_a_bounded_grace(
    in_process: InProcessFactory, notebook_dir: Path, portal: FakeQuixPortal
) -> None:
    run = quix(in_process, notebook_dir, portal, None, "--quix-recheck", "1", "--quix-grace", "4")
    cookie = cookie_of(login(run, USER)[1])
    portal.state.down = True
    queries = portal.state.permission_queries()
    # Once a re-check is due (a second on), the portal is asked, fails, and the session stays.
    eventually(
        lambda: (
            request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 200
            and portal.state.permission_queries() > queries
        ),
        20,
        "a re-check against the unreachable portal",
    )
    assert "kept for up to 4 s" in run.log_text()
    assert request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 200
    # ... but not for longer than the grace: then it ends, for good.
    eventually(
        lambda: request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 401,
        60,
        "the grace to run out",
    )
    assert "the portal could not re-check it for 4 s" in run.log_text()
    portal.state.down = False
    assert request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 401


def test_ending_a_session_closes_its_terminal(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    """The terminal behind is the stand-in's (it echoes); what closes it is the orchestrator's
    relay, the same for marimo's."""
    run = in_process(notebook_dir)
    run.wait_ready()
    cookie = cookie_of(login(run, run.token)[1])
    url = run.base.replace("http", "ws") + "/terminal/ws"
    with connect(
        url,
        open_timeout=30,
        origin=run.base,
        additional_headers={"Cookie": cookie},  # type: ignore[arg-type]
    ) as terminal:
        terminal.send("echo hello\r")
        eventually(lambda: b"hello" in _drain(terminal), 30, "the terminal to answer")
        code, _, _ = request(run, "POST", "/-/logout", {"Cookie": cookie, "Origin": run.base})
        assert code == 303
        with pytest.raises(ConnectionClosed):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    terminal.recv(timeout=1)
        assert terminal.close_code == 1008


def test_a_revoked_quix_token_closes_its_terminal(
    in_process: InProcessFactory, notebook_dir: Path, portal: FakeQuixPortal
) -> None:
    """An open terminal makes no new requests: the session behind it is re-checked anyway."""
    run = quix(in_process, notebook_dir, portal, None, "--quix-recheck", "1")
    run.wait_ready()
    cookie = cookie_of(login(run, USER)[1])
    url = run.base.replace("http", "ws") + "/terminal/ws"
    with connect(
        url,
        open_timeout=30,
        origin=run.base,  # type: ignore[arg-type]
        additional_headers={"Cookie": cookie},
    ) as terminal:
        terminal.send("echo still-here\r")
        eventually(lambda: b"still-here" in _drain(terminal), 30, "the terminal to answer")
        portal.state.allowed_tokens.discard(USER)
        with pytest.raises(ConnectionClosed):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    terminal.recv(timeout=1)
        assert terminal.close_code == 1008
    assert request(run, "GET", "/-/status", {"Cookie": cookie})[0] == 401


def _drain(terminal: object) -> bytes:
    data = b""
    try:
        while True:
            message = terminal.recv(timeout=0.2)  # type: ignore[attr-defined]
            data += message.encode() if isinstance(message, str) else message
    except TimeoutError:
        return data


# -- 7. origins, Secure cookies --------------------------------------------------------------------


def test_origins_compare_the_scheme_and_cookies_are_secure_over_https(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    plain = in_process(notebook_dir, quix=False)  # no proxy in front is trusted
    plain.wait_listening()
    form = urllib.parse.urlencode({"token": plain.token}).encode()
    https_origin = plain.base.replace("http://", "https://")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    code, _, _ = request(plain, "POST", "/-/login", {**headers, "Origin": https_origin}, form)
    assert code == 403, "another scheme is another origin"
    code, _, _ = request(
        plain,
        "POST",
        "/-/login",
        {**headers, "Origin": https_origin, "X-Forwarded-Proto": "https"},
        form,
    )
    assert code == 403, "X-Forwarded-Proto is ignored unless a proxy is trusted"
    code, answer, _ = request(plain, "POST", "/-/login", {**headers, "Origin": plain.base}, form)
    assert code == 303 and "Secure" not in answer["set-cookie"]

    proxied = in_process(notebook_dir, None, "--trust-proxy", port=None)
    proxied.wait_listening()
    form = urllib.parse.urlencode({"token": proxied.token}).encode()
    code, answer, _ = request(
        proxied,
        "POST",
        "/-/login",
        {
            **headers,
            "Origin": "https://notebooks.example.test",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "notebooks.example.test",
        },
        form,
    )
    assert code == 303
    assert "; Secure" in answer["set-cookie"] or "Secure;" in answer["set-cookie"]
    code, _, _ = request(
        proxied,
        "POST",
        "/-/login",
        {
            **headers,
            "Origin": "http://notebooks.example.test",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "notebooks.example.test",
        },
        form,
    )
    assert code == 403


def test_the_sign_in_page_names_the_portal_origins(
    in_process: InProcessFactory, notebook_dir: Path, portal: FakeQuixPortal
) -> None:
    run = quix(in_process, notebook_dir, portal)
    _, _, body = request(run, "GET", "/-/login", HTML)
    assert b'data-portal-origins="https://portal.cloud.quix.io"' in body


# -- 8. marimo does not see the orchestrator's secrets ---------------------------------------------


def test_marimo_runs_without_the_orchestrators_secrets(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    token = "orchestrator-secret-token-0123"
    run = orchestrator(
        notebook_dir,
        None,
        "--auth",
        "token",
        env={
            "ORCHESTRATOR_TOKEN": token,
            "ORCHESTRATOR_LOG_LEVEL": "info",
            "Quix__Sdk__Token": "sdk-token-for-notebooks",
            "Quix__Workspace__Id": "ws-notebooks",
        },
    )
    run.token = token
    status = run.wait_ready()
    marimo_pid = int(status["marimo"]["pid"])
    seen = [psutil.Process(marimo_pid), *psutil.Process(marimo_pid).children(recursive=True)]
    for process in seen:
        environ = process.environ()
        assert "ORCHESTRATOR_TOKEN" not in environ, process.cmdline()
        assert not any(key.startswith("ORCHESTRATOR_") for key in environ)
        assert token not in json.dumps(environ)
        assert environ.get("Quix__Sdk__Token") == "sdk-token-for-notebooks"
        assert environ.get("Quix__Workspace__Id") == "ws-notebooks"
    assert os.environ.get("ORCHESTRATOR_TOKEN") != token  # the test's own environment is clean


def test_quix_tokens_of_every_length_sign_in_within_a_cookie_browsers_keep(
    in_process: InProcessFactory, notebook_dir: Path, portal: FakeQuixPortal, tmp_path: Path
) -> None:
    """A portal JWT is about 1-2 KB: sealed in the cookie it survives restarts. One too long for
    a 4 KB cookie still signs in, for this process's life (said in the log)."""
    state = tmp_path / "state"
    state.mkdir()
    usual, huge = "eyJ" + "a" * 1500, "eyJ" + "b" * 3000
    portal.state.allowed_tokens.update({usual, huge})
    run = quix(in_process, notebook_dir, portal, state)
    run.wait_for(lambda s: s["state"]["path"] == str(state), what="state resolved")
    cookies = {}
    for token in (usual, huge):
        code, headers, _ = login(run, token)
        assert code == 303
        assert len(headers["set-cookie"]) < 4096
        cookies[token] = cookie_of(headers)
        assert request(run, "GET", "/-/status", {"Cookie": cookies[token]})[0] == 200
    assert "too long to keep in the session cookie" in run.log_text()
    assert run.terminate() == 0
    run = quix(in_process, notebook_dir, portal, state)
    assert request(run, "GET", "/-/status", {"Cookie": cookies[usual]})[0] == 200
    assert request(run, "GET", "/-/status", {"Cookie": cookies[huge]})[0] == 401


UNPRIVILEGED = ("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all")
"""The same user without any capability: what marimo's code is to the orchestrator outside a
root container (the tests run as root, whose CAP_SYS_PTRACE would read anything)."""


@pytest.mark.marimo
def test_notebook_code_cannot_read_the_orchestrators_environment_or_memory(
    tmp_path: Path, notebook_dir: Path, index: LocalIndex
) -> None:
    token = "orchestrator-secret-token-4567"
    run = Orchestrator(
        notebook_dir,
        tmp_path / "state",
        tmp_path / "orchestrator.log",
        hermetic_env({**index.env(), "ORCHESTRATOR_TOKEN": token}),
        ("--auth", "token"),
        prefix=UNPRIVILEGED,
    )
    run.token = token
    try:
        status = run.wait_ready()
        orchestrator_pid = run.process.pid
        marimo_pid = int(status["marimo"]["pid"])
        # A cell's view: the same user, no privilege. marimo's own process is readable (the
        # control), the orchestrator's is not.
        for what in ("environ", "mem", "maps"):
            reader = subprocess.run(
                [*UNPRIVILEGED, "cat", f"/proc/{orchestrator_pid}/{what}"],
                capture_output=True,
                timeout=30,
            )
            assert reader.returncode != 0 and b"Permission denied" in reader.stderr, what
            assert token.encode() not in reader.stdout
        control = subprocess.run(
            [*UNPRIVILEGED, "cat", f"/proc/{marimo_pid}/environ"], capture_output=True, timeout=30
        )
        assert control.returncode == 0 and b"PATH=" in control.stdout
        assert token.encode() not in control.stdout
    finally:
        run.kill_everything()


def test_a_session_secret_planted_by_another_user_is_not_used(
    in_process: InProcessFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    """marimo's user can write where the orchestrator shares with it; a secret it put in the
    state folder would let it forge sessions. Only the orchestrator's own file is used."""
    state = tmp_path / "state"
    state.mkdir()
    planted = b"p" * 48
    (state / "session-secret").write_bytes(planted)
    os.chown(state / "session-secret", 4343, 4343)
    run = in_process(notebook_dir, state)
    run.wait_for(lambda s: s["state"]["path"] == str(state), what="state resolved")
    forged = tornado.web.create_signed_value(
        planted,
        COOKIE,
        json.dumps({"sid": "s", "iat": time.time(), "cb": binding(planted, run.token)}),
    ).decode()
    assert request(run, "GET", "/-/status", {"Cookie": f"{COOKIE}={forged}"})[0] == 401
    kept = (state / "session-secret").stat()
    assert kept.st_uid == os.getuid() and (state / "session-secret").read_bytes() != planted
    assert "not to the orchestrator: replaced" in run.log_text()
    # The orchestrator's own secret signs (control).
    assert (
        request(run, "GET", "/-/status", {"Cookie": cookie_of(login(run, run.token)[1])})[0] == 200
    )
