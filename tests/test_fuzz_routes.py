"""Whatever a client sends to ``/-/``, the answer is never a 5xx and the log gets no traceback.

One orchestrator's web side in this process (tests/support/in_process.py: the real application,
guard and bounded server; Quix's layout, token sign-in, a stand-in marimo up) takes a seeded
stream of requests over keep-alive connections: random methods, paths (odd bytes,
percent-encodings, dot segments, NULs; always under ``/-/`` on the wire, what does not start so
is marimo's), headers
(origins, cookies, bearer tokens, content types, ranges, dates) and bodies (JSON of every shape
and type, nested thousands deep, duplicated keys, NaN, lone surrogates, invalid UTF-8; forms;
noise), signed in or not. ``FUZZ_SEED`` replays a run (the seed is printed); ``FUZZ_REQUESTS``
changes its length.

Restart bodies never carry a valid scope (a real restart or rebuild would only slow the run: the
strict reading of a valid body is checked by the targeted tests below), and a logout signed in
uses a session minted for it (so the fuzz's own session survives).
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import socket
import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import tornado.web

from orchestrator.trust.session_crypto import binding
from tests.support.in_process import InProcess, serving
from tests.support.notebooks import NOTEBOOK
from tests.support.orchestrator import hermetic_env, quix_layout_env
from tests.support.quix_portal import FakeQuixPortal
from tests.support.sign_in import COOKIE, cookie_of, login, request

REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "10000"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    notebooks = root / "app"
    notebooks.mkdir()
    (notebooks / "notebook.py").write_text(NOTEBOOK)
    state = notebooks / "state"
    state.mkdir()
    with FakeQuixPortal() as portal:
        env = {**quix_layout_env(portal.env(), state), "ORCHESTRATOR_AUTH": "token"}
        with serving(notebooks, state, hermetic_env(env)) as run:
            run.wait_ready()
            yield run


def mint_cookie(run: InProcess) -> str:
    """A fresh session of the fuzz's own, signed as the orchestrator signs (for logouts)."""
    secret = (run.state_dir / "session-secret").read_bytes()
    value = json.dumps(
        {"sid": secrets.token_urlsafe(24), "iat": time.time(), "cb": binding(secret, run.token)}
    )
    return f"{COOKIE}={tornado.web.create_signed_value(secret, COOKIE, value).decode()}"


# -- the client: raw bytes on the wire, keep-alive ----------------------------------------------


class Wire:
    """One keep-alive connection at a time; any request line or header goes out as given."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.connections = 0
        self.closed_after: Counter[int] = Counter()
        self.reconnects = 0
        """Requests sent again on a new connection: the server had closed the kept one."""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=20)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
            self.connections += 1
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self) -> bool:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("closed mid-body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed mid-head")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def exchange(self, method: bytes, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one request, read its answer; reconnects once when a kept connection had been
        closed by the server before any byte of the answer."""
        for attempt in (0, 1):
            sock = self._connect()
            try:
                sock.sendall(raw)
                while not self.buffer:
                    if not self._fill():
                        raise ConnectionResetError("closed before answering")
                break
            except (ConnectionResetError, BrokenPipeError):
                self.close()
                self.reconnects += 1
                if attempt:
                    raise
        status_line = self._line()
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close"
        body = b""
        if status == 101 or headers.get("content-type", "").startswith("text/event-stream"):
            keep = False  # a stream: its head is the answer
        elif method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while (size := int(self._line().split(b";")[0], 16)) > 0:
                body += self._take(size)
                self._take(2)
            while self._line():
                pass
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buffer, keep = self.buffer, b"", False
        if not keep:
            self.close()
            self.closed_after[status] += 1
        return status, headers, body


# -- what goes on the wire ------------------------------------------------------------------------

ROUTES = [
    "/-/login",
    "/-/logout",
    "/-/restart",
    "/-/metrics",
    "/-/healthy",
    "/-/ready",
    "/-/status",
    "/-/events",
    "/-/loading",
    "/-/static/panel.js",
    "/-/static/login.js",
    "/-/static/loading.css",
    "/-/static/",
    "/-/static",
    "/-/",
    "/-/nothing-here",
]
METHODS = ["GET"] * 6 + ["POST"] * 6 + ["HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]
ODD_METHODS = ["get", "FOO", "CONNECT", "PROPFIND", "G\x00T", "POST ", ""]
SUFFIXES = [
    "", "", "", "/", "%00", "%00.css", "%ff", "%2e%2e/status", "/../status", "/./", ";x", "%2F",
    "//", "/%c0%ae%c0%ae/", "\x00", "\xff", "%", "%zz", "%u2215", "\\", "..", "/~", "\t", " x",
    "#frag", "?", "%3F", "/%2e%2e%2f%2e%2e%2fetc/passwd", "panel.js%00.css", "é", "%E2%98%83",
]  # fmt: skip
ORIGINS = [
    None, "{base}", "null", "http://[", "http://[::1", "https://evil.example", "http://127.0.0.1:99999",
    "http://127.0.0.1:0", "javascript:alert(1)", "", "http://%zz", "{base}/path", "HTTP://127.0.0.1",
    "http://user@127.0.0.1:{port}", "http://[fe80::1%25eth0]:1",
]  # fmt: skip
CONTENT_TYPES = [
    None, "application/json", "application/json; charset=utf-8", "application/jsonx",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
    "multipart/form-data", "text/plain", "application/json; charset=latin-1", "\x00", "é",
]  # fmt: skip
SCOPES = ["Marimo", "install ", "", "deployments", "INSTALL", "marimo\x00", "*", "é", "ma rimo"]
STRINGS = [
    "", "false", "true", "0", "null", "/", "//evil.example", "/\\evil", "/?file=x", "/\x00",
    "\ud800", "\u2028", "é☃", "x" * 9000, "/" + "a" * 3000, "http://evil.example/", "\r\nX: y",
    "%2F%2Fevil", "{{NOTICE}}", "<script>",
]  # fmt: skip


def json_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**70, -(2**63)])
    if kind == 3:
        return rng.choice([1.5, -0.0, 1e308, 3.0])
    if kind in (4, 5, 6):
        return rng.choice(STRINGS + SCOPES)
    if kind in (7, 8):
        return {
            rng.choice(["scope", "rebuild", "token", "next", "x", "", "é"]): json_value(
                rng, depth + 1
            )
            for _ in range(rng.randrange(4))
        }
    return [json_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def json_body(rng: random.Random, base: str) -> bytes:
    kind = rng.randrange(14)
    if kind == 0:  # deep nesting
        n = rng.choice([17, 100, 1000, 5000, 8000])
        return b"[" * n + b"]" * n
    if kind == 1:
        n = rng.choice([17, 200, 2700])
        return b'{"scope":' * n + b"1" + b"}" * n
    if kind == 2:  # deep and unbalanced
        return b"[{" * rng.choice([10, 3000])
    if kind == 3:
        return rng.choice([b"NaN", b'{"rebuild": NaN}', b'{"scope": Infinity}', b"-Infinity"])
    if kind == 4:
        return b'{"scope": "x", "scope": "y"}'
    if kind == 5:
        return b'{"scope": "' + b"1" * 5000 + b'"}' if rng.random() < 0.5 else b"1" * 5000
    if kind == 6:
        return rng.choice([b'{"token": "\\ud800"}', b'{"next": "\\udfff/"}', b'"\\ud800"'])
    if kind == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if kind == 8:
        text = json.dumps(json_value(rng)).encode()
        return text[: rng.randrange(len(text) + 1)]
    if kind == 9:
        return b"x" * rng.choice([16 * 1024, 16 * 1024 + 1, 20000])
    if kind == 10:  # restart-shaped
        payload: dict[str, object] = {"scope": rng.choice([*SCOPES, json_value(rng)])}
        if rng.random() < 0.7:
            payload["rebuild"] = json_value(rng)
        if rng.random() < 0.2:
            payload[rng.choice(["extra", "é", ""])] = json_value(rng)
        return json.dumps(payload).encode()
    if kind == 11:  # login-shaped
        return json.dumps({"token": json_value(rng), "next": json_value(rng)}).encode()
    if kind == 12:
        return rng.choice([b"", b"{}", b"[]", b"null", b"\xff\xfe{}", b"\xef\xbb\xbf{}"])
    return json.dumps(json_value(rng)).encode()


def quoted(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def noise(rng: random.Random, size: int) -> str:
    alphabet = "abc/%._-~?&=#;:@+ \x00\x7f\xff\u00e9\u2603\ud800"
    return "".join(rng.choice(alphabet) for _ in range(size))


def form_body(rng: random.Random) -> bytes:
    fields = []
    for _ in range(rng.randrange(4)):
        name = rng.choice(["token", "next", "token", "x", "", "tok%65n"])
        value = rng.choice([quoted(rng.choice(STRINGS)), "%ff", "%", "a+b", noise(rng, 8)])
        fields.append(f"{name}={value}" if rng.random() < 0.9 else name)
    text = "&".join(fields)
    return text.encode("utf-8", "surrogatepass" if rng.random() < 0.5 else "replace")


def query(rng: random.Random, token: str) -> str:
    parts = []
    for _ in range(rng.randrange(4)):
        name = rng.choice(["next", "token", "signed_out", "file", "v", "next"])
        value = rng.choice(
            [
                quoted(rng.choice(STRINGS)),
                "%ff",
                "everyone",
                "until-restart",
                "here",
                token if rng.random() < 0.05 else "wrong",
                noise(rng, 6),
            ]
        )
        parts.append(f"{name}={value}")
    return "?" + "&".join(parts)


def path(rng: random.Random, token: str) -> str:
    base = rng.choice(ROUTES)
    if rng.random() < 0.5:
        base += rng.choice(SUFFIXES)
    if rng.random() < 0.15:  # percent-encode some characters after /-/ (still one of ours)
        base = "/-/" + "".join(
            f"%{ord(c):02X}" if ord(c) < 128 and rng.random() < 0.3 else c for c in base[3:]
        )
    if rng.random() < 0.05:
        base = base.upper()
    if rng.random() < 0.3:
        base += query(rng, token)
    if rng.random() < 0.02:
        base += "a" * rng.choice([4000, 9000])
    return base


def build(rng: random.Random, run: InProcess, cookie: str) -> tuple[bytes, bytes, str]:
    """(method, the request's bytes, the route it names).

    A third of the requests are well-formed envelopes for the routes that read a body (POST,
    this site's Origin, a JSON or form content type, signed in for /-/restart): their bodies
    reach the handlers' reading instead of being refused at the door."""
    envelope = rng.random() < 0.33
    if envelope:
        method = "POST"
        route = rng.choice(["/-/restart", "/-/restart", "/-/login", "/-/logout"])
        target = route + (query(rng, run.token) if rng.random() < 0.2 else "")
    else:
        method = rng.choice(METHODS) if rng.random() < 0.97 else rng.choice(ODD_METHODS)
        target = path(rng, run.token)
        route = next((r for r in ROUTES if target.startswith(r)), "")
    host = f"127.0.0.1:{run.port}"
    headers: list[tuple[str, str]] = [("Host", host if rng.random() < 0.98 else "evil.example")]
    signed_in = rng.random() < (0.9 if envelope else 0.5)
    if signed_in:
        if route == "/-/logout" or rng.random() < 0.02:
            headers.append(("Cookie", mint_cookie(run)))  # logs out a session of its own
        elif rng.random() < 0.9:
            headers.append(("Cookie", cookie))
        else:
            headers.append(("Authorization", f"Bearer {run.token}"))
    elif rng.random() < 0.3:
        headers.append(
            rng.choice(
                [
                    ("Cookie", f"{COOKIE}=garbage"),
                    ("Cookie", f"{COOKIE}={cookie.partition('=')[2][:-3]}AAA"),
                    ("Cookie", f'{COOKIE}="|||"; other=1'),
                    ("Cookie", "\x01=\x02"),
                    ("Authorization", "Bearer wrong-token"),
                    ("Authorization", "Bearer "),
                    ("Authorization", "Basic Zm9vOmJhcg=="),
                    ("Authorization", "Bearer " + "x" * 5000),
                ]
            )
        )
    origin = "{base}" if envelope and rng.random() < 0.9 else rng.choice(ORIGINS)
    if origin is not None:
        headers.append(("Origin", origin.format(base=run.base, port=run.port)))
    if rng.random() < 0.4:
        headers.append(("Accept", rng.choice(["text/html", "*/*", "application/json", "é"])))
    for name, values in (
        ("X-Forwarded-For", ["1.2.3.4", "::1, x", "", "\x00"]),
        ("X-Forwarded-Proto", ["https", "http, https", "gopher"]),
        ("X-Forwarded-Host", ["evil.example", "[", host]),
        ("Range", ["bytes=0-1", "bytes=5-1", "bytes=abc", "bytes=-0", "bytes=0-0,1-1"]),
        ("If-Modified-Since", ["garbage", "Thu, 01 Jan 1970 00:00:00 GMT", "Mon, 99 Foo 0"]),
        ("If-None-Match", ['"x"', "*", "W/", ""]),
        ("Accept-Encoding", ["gzip", "br;q=x", "*"]),
        ("Upgrade", ["websocket"]),
        ("Sec-WebSocket-Version", ["13", "x"]),
        ("Referer", ["http://[", "/-/x", f"http://{host}/"]),
    ):
        if rng.random() < 0.06:
            headers.append((name, rng.choice(values)))
    body = b""
    if method not in ("GET", "HEAD") or rng.random() < 0.05:
        content_type = rng.choice(CONTENT_TYPES)
        if envelope and rng.random() < 0.9:
            content_type = (
                "application/x-www-form-urlencoded"
                if route == "/-/login" and rng.random() < 0.4
                else "application/json"
            )
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        if content_type and "json" in content_type:
            body = json_body(rng, run.base)
        elif content_type and "form" in content_type:
            body = form_body(rng)
        elif rng.random() < 0.5:
            body = json_body(rng, run.base)
        headers.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    raw = head.encode("utf-8", "surrogatepass") + b"\r\n" + body
    return method.encode("utf-8", "surrogatepass"), raw, route


def test_no_request_to_our_routes_gets_a_5xx_or_a_traceback(served: InProcess) -> None:
    seed = int(os.environ.get("FUZZ_SEED", str(secrets.randbits(32))))
    print(f"FUZZ_SEED={seed} FUZZ_REQUESTS={REQUESTS}")
    rng = random.Random(seed)
    _, headers, _ = login(served, served.token)
    cookie = cookie_of(headers)
    log_start = len(served.log_text())
    wire = Wire(served.port)
    statuses: Counter[int] = Counter()
    by_route: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    for number in range(REQUESTS):
        method, raw, route = build(rng, served, cookie)
        try:
            status, _, body = wire.exchange(method, raw)
        except (OSError, ValueError, IndexError) as error:
            failures.append(f"#{number} {raw[:300]!r}: no answer ({error!r})")
            wire.close()
            if len(failures) > 20:
                break
            continue
        statuses[status] += 1
        by_route[route, status] += 1
        if status >= 500:
            failures.append(f"#{number} {raw[:300]!r}: {status} {body[:200]!r}")
            if len(failures) > 20:
                break
    took = time.monotonic() - started
    wire.close()
    print(
        f"{REQUESTS} requests in {took:.1f} s over {wire.connections} connections "
        f"(closed after {sorted(wire.closed_after.items())}, {wire.reconnects} found closed); "
        f"statuses {sorted(statuses.items())}\nby route {sorted(by_route.items())}"
    )
    log = "\n".join(line[:300] for line in served.log_text()[log_start:].splitlines())
    tracebacks = [line for line in log.splitlines() if re.search(r"Traceback| ERROR ", line)]
    assert not failures, f"seed {seed}:\n" + "\n".join(failures) + "\n" + log[-5000:]
    assert not tracebacks, f"seed {seed}: {tracebacks[:10]}\n{log[-8000:]}"
    assert served.get("/-/healthy")[0] == 200
    # The fuzz's own session was never ended by it: the signed-in half really was signed in.
    assert request(served, "GET", "/-/status", {"Cookie": cookie})[0] == 200
    # It reached the handlers: bodies read and refused, sign-ins refused, pages served.
    assert by_route["/-/restart", 400] > REQUESTS // 20, by_route
    assert by_route["/-/login", 400] > REQUESTS // 50, by_route
    assert statuses[200] > REQUESTS // 50, statuses


# -- the cases from issue 28, one by one ----------------------------------------------------------


def post_json(
    run: InProcess, route: str, body: bytes, cookie: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "Origin": run.base}
    if cookie:
        headers["Cookie"] = cookie
    return request(run, "POST", route, headers, body)


def test_a_string_is_not_a_boolean_and_the_field_is_named(served: InProcess) -> None:
    cookie = mint_cookie(served)  # the fuzz's failed sign-ins may have this client throttled

    def status() -> dict[str, object]:
        code, _, body = request(served, "GET", "/-/status", {"Cookie": cookie})
        assert code == 200, body
        return dict(json.loads(body))

    before = status()
    for body, field in (
        (b'{"scope": "install", "rebuild": "false"}', "rebuild"),
        (b'{"scope": "install", "rebuild": 0}', "rebuild"),
        (b'{"scope": "install", "rebuild": null}', "rebuild"),
        (b'{"scope": ["install"]}', "scope"),
        (b'{"rebuild": true}', "scope"),
        (b'{"scope": "install", "rebiuld": true}', "rebiuld"),
        (b'{"scope": "install", "scope": "marimo"}', "scope"),
    ):
        code, _, answer = post_json(served, "/-/restart", body, cookie)
        assert code == 400, (body, code, answer)
        error = json.loads(answer)
        assert error["field"] == field and repr(field) in error["error"], (body, error)
    code, _, answer = post_json(served, "/-/restart", b"[" * 5000 + b"]" * 5000, cookie)
    assert code == 400 and b"nested more than" in answer, answer
    # Nothing was started: no notice, no new install.
    after = status()
    assert after.get("notice") == before.get("notice")
    assert after["steps"] == before["steps"]


def test_odd_sign_in_bodies_and_static_paths_are_refused_cleanly(served: InProcess) -> None:
    log_start = len(served.log_text())
    code, headers, answer = post_json(
        served, "/-/login", json.dumps({"token": {"a": 1}, "next": {"x": 1}}).encode()
    )
    assert code == 400 and "set-cookie" not in headers, (code, answer)
    assert json.loads(answer)["field"] == "token" and json.loads(answer)["ok"] is False
    code, headers, _ = post_json(
        served, "/-/login", json.dumps({"token": served.token, "next": {"x": 1}}).encode()
    )
    assert code == 400 and "set-cookie" not in headers, "fails closed: no session"
    for odd in ("/-/static/panel.js%00.css", "/-/static/%ff", "/-/static/../app.py"):
        assert request(served, "GET", odd)[0] in (400, 404), odd
    assert request(served, "GET", "/-/static/panel.js")[0] == 200
    assert "Traceback" not in served.log_text()[log_start:]
