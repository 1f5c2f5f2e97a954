"""Headers backend: responses whose headers the proxy must pass, or strip, exactly."""

from __future__ import annotations

import json

from tornado.web import Application, RequestHandler

COOKIES = (
    "a=1; Path=/",
    "b=2; HttpOnly; SameSite=Lax",
    "c=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
)
ETAG = '"v1-abc"'


class CookiesHandler(RequestHandler):
    def get(self) -> None:
        for cookie in COOKIES:
            self.add_header("Set-Cookie", cookie)
        self.finish("cookies")


class HopByHopHandler(RequestHandler):
    """Sends every kind of hop-by-hop header next to end-to-end ones."""

    def get(self) -> None:
        self.set_header("Connection", "X-Custom, X-Other")
        self.set_header("X-Custom", "must not cross")
        self.set_header("X-Other", "must not cross either")
        self.set_header("Keep-Alive", "timeout=99")
        self.set_header("Proxy-Authenticate", "Basic realm=upstream")
        self.set_header("Trailer", "X-Checksum")
        self.set_header("Upgrade", "h2c")
        self.set_header("X-Kept", "yes")
        self.set_header("Marimo-Server-Token", "skew-123")
        self.finish("hop")


class EtagHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("ETag", ETAG)
        self.set_header("Content-Type", "text/javascript")
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish("console.log('versioned');")


class BareHandler(RequestHandler):
    """A response with no Content-Type and no Server header at all."""

    def get(self) -> None:
        self.clear_header("Content-Type")
        self.clear_header("Server")
        self.finish(b"\x00\x01bare")

    def compute_etag(self) -> None:
        return None


class AuthHandler(RequestHandler):
    """Says whether the expected Authorization arrived, without ever echoing it."""

    def initialize(self, expected: str) -> None:
        self.expected = expected

    def get(self) -> None:
        seen = self.request.headers.get_list("Authorization")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"authorized": seen == [self.expected], "count": len(seen)}))


class StatusHandler(RequestHandler):
    """Answers with the status in the path: marimo's own errors and redirects."""

    def get(self, code: str) -> None:
        self.set_status(int(code))
        if int(code) in (301, 302, 303, 307, 308):
            self.set_header("Location", "/auth/login?next=%2Fnb")
        if int(code) in (204, 304):
            self.finish()
            return
        self.finish(f"status {code}")


class SessionHandler(RequestHandler):
    """Authenticates as marimo does: a valid ``session_<port>`` cookie, else the bearer token,
    answered with a newly signed cookie. Reports what it saw (never the token itself).

    ``/session/clear`` clears the cookie as Starlette's session middleware does."""

    def initialize(self, expected: str, issued: list[str]) -> None:
        self.expected = expected
        self.issued = issued

    def get(self, action: str) -> None:
        # marimo names the cookie after the port it listens on (the Host header is the proxy's).
        port = self.request.connection.stream.socket.getsockname()[1]  # type: ignore[attr-defined]
        name = f"session_{port}"
        cookie = self.get_cookie(name)
        valid = cookie is not None and cookie in self.issued
        bearer = self.request.headers.get("Authorization") == self.expected
        if action == "/clear":
            self.add_header(
                "Set-Cookie", f"{name}=null; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT"
            )
        elif not valid and bearer:
            self.issued.append(f"signed-{len(self.issued) + 1}")
            self.add_header(
                "Set-Cookie",
                f"{name}={self.issued[-1]}; path=/; Max-Age=1209600; httponly; samesite=lax",
            )
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "cookie_lines": self.request.headers.get_list("Cookie"),
                    "by": "cookie" if valid else "token" if bearer else None,
                }
            )
        )


def make_app(expected_authorization: str = "", issued: list[str] | None = None) -> Application:
    return Application(
        [
            (r"/cookies", CookiesHandler),
            (r"/hop", HopByHopHandler),
            (r"/etag", EtagHandler),
            (r"/bare", BareHandler),
            (r"/auth", AuthHandler, {"expected": expected_authorization}),
            (r"/status/(\d+)", StatusHandler),
            (
                r"/session(/clear)?",
                SessionHandler,
                {"expected": expected_authorization, "issued": [] if issued is None else issued},
            ),
        ]
    )
