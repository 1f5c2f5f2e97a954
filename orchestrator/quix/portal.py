"""The Quix portal API: token validation and deployment restarts (see reference/quix.md).

``requests`` is imported lazily: nothing here is on the start-up path. Calls run on the
portal's own bounded set of daemon threads (never the loop's default executor, which shutdown,
sync and the jobs use), each with a connect and read timeout and an overall deadline, so nothing
the portal does can hold up the process, its shutdown included. Timeouts and 5xx are retried
with tenacity; 401/403 are answers.

Invariants: a token is only ever sent to the portal, never logged; the cache is keyed by its
SHA-256, so the token itself is not kept. The permission check fails closed: only a 200 whose
body is empty or the JSON ``true`` (or ``{"allowed": true}``) allows; anything else, redirects
included (never followed), denies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator.quix.settings import QuixSettings

PORTAL_THREADS = 4
"""Portal calls in flight at once; more wait (within their deadline) for a free one."""

log = logging.getLogger("orchestrator")


class PortalUnavailable(Exception):
    """The portal did not answer (timeout, connection error, 5xx) after our retries."""


class PortalRefused(Exception):
    """The portal answered a 4xx other than 401/403 for this one call (e.g. one file path)."""


class _Retryable(Exception):
    pass


def permission_answer(status: int, content_type: str, text: str) -> bool:
    """Does this answer to the permission query allow? Fails closed.

    Allows: a 200 with an empty body (the published client's status-code convention), with the
    JSON ``true``, or with ``{"allowed": true}``. Everything else denies: other statuses
    (redirects included), ``false``, ``{}``, ``[]``, other objects, and anything not JSON (a
    sign-in page, a captive proxy).
    """
    import json

    if status != 200:
        return False
    body = text.strip()
    if not body:
        return True
    if "html" in content_type.lower():
        return False
    try:
        value = json.loads(body)
    except ValueError:
        return False
    if value is True:
        return True
    return isinstance(value, dict) and len(value) == 1 and value.get("allowed") is True


class _Threads:
    """At most ``size`` blocking calls alive at once, each on its own daemon thread.

    A slot is held until the thread ends, even when its caller gave up waiting (deadline): a
    hanging portal never makes more than ``size`` threads. Daemon threads, because the
    interpreter waits at exit for the loop's default executor (and any ThreadPoolExecutor),
    but not for these.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._slots: asyncio.Semaphore | None = None

    async def run(self, call: Callable[[], tuple[int, str, str]]) -> tuple[int, str, str]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        slots = self._slots
        await slots.acquire()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, str, str]] = loop.create_future()

        def settle(result: tuple[int, str, str] | None, error: BaseException | None) -> None:
            slots.release()
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert result is not None
                future.set_result(result)

        def work() -> None:
            result: tuple[int, str, str] | None = None
            error: BaseException | None = None
            try:
                result = call()
            except BaseException as failure:  # handed to the awaiting task
                error = failure
            with contextlib.suppress(RuntimeError):  # a closed loop: the process is ending
                loop.call_soon_threadsafe(settle, result, error)

        try:
            threading.Thread(target=work, name="quix-portal", daemon=True).start()
        except BaseException:
            slots.release()
            raise
        return await future


class QuixPortal:
    """Validates tokens (cached by hash: ``yes_ttl`` for a yes, seconds for a no) and restarts.

    Concurrent checks of one token share one portal call.
    """

    def __init__(self, settings: QuixSettings, *, yes_ttl: float, no_ttl: float = 10.0) -> None:
        self.settings = settings
        self.yes_ttl = yes_ttl
        self.no_ttl = no_ttl
        self._cache: dict[str, tuple[bool, float]] = {}
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._threads = _Threads(PORTAL_THREADS)
        self._warned: set[tuple[int, str]] = set()

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "X-Version": "2.0"}

    async def _call(
        self, method: str, path: str, token: str, body: Any = None, raw_body: str | None = None
    ) -> tuple[int, str, str]:
        """(status, content type, text); raises :class:`PortalUnavailable` by the deadline."""
        try:
            return await asyncio.wait_for(
                self._call_with_retries(method, path, token, body, raw_body),
                self.settings.deadline,
            )
        except TimeoutError:
            raise PortalUnavailable("the Quix portal did not answer in time") from None

    async def _call_with_retries(
        self, method: str, path: str, token: str, body: Any, raw_body: str | None
    ) -> tuple[int, str, str]:
        import requests
        from tenacity import (
            AsyncRetrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential_jitter,
        )

        url = f"{self.settings.portal_api}/{path.lstrip('/')}"
        timeout = self.settings.timeout

        def once() -> tuple[int, str, str]:
            try:
                headers = self._headers(token)
                if raw_body is not None:
                    headers["Content-Type"] = "text/plain; charset=utf-8"
                response = requests.request(
                    method,
                    url,
                    headers=headers,
                    json=body,
                    data=raw_body.encode("utf-8") if raw_body is not None else None,
                    timeout=(timeout, timeout),
                    allow_redirects=False,
                )
            except (requests.Timeout, requests.ConnectionError) as error:
                raise _Retryable(type(error).__name__) from None
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}")
            return (
                response.status_code,
                response.headers.get("Content-Type", ""),
                response.text[:65536],
            )

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(3),
                wait=wait_exponential_jitter(multiplier=0.2, max=2),
                retry=retry_if_exception_type(_Retryable),
                reraise=True,
            ):
                with attempt:
                    return await self._threads.run(once)
        except _Retryable as error:
            raise PortalUnavailable(f"the Quix portal did not answer ({error})") from None
        raise AssertionError("unreachable")

    async def is_allowed(self, token: str) -> bool:
        """May this token read the workspace? Raises :class:`PortalUnavailable` on an outage.

        A cached yes is at most ``yes_ttl`` seconds old.
        """
        import hashlib  # not on the start-up path

        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._ask(key, token))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _ask(self, key: str, token: str) -> bool:
        query = (
            "auth/permissions/query?resourceType=Workspace"
            f"&resourceId={self.settings.workspace_id}&permissions=Read"
        )
        status, content_type, text = await self._call("GET", query, token)
        allowed = permission_answer(status, content_type, text)
        documented_no = status in (401, 403) or (status == 200 and text.strip() == "false")
        if not allowed and not documented_no:
            self._warn_once(status, content_type)
        now = time.monotonic()
        self._cache[key] = (allowed, now + (self.yes_ttl if allowed else self.no_ttl))
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
        return allowed

    def _warn_once(self, status: int, content_type: str) -> None:
        shape = (status, content_type.split(";", 1)[0].strip().lower() or "none")
        if shape in self._warned or len(self._warned) > 100:
            return
        self._warned.add(shape)
        log.warning(
            "the Quix portal answered the permission check with HTTP %d (Content-Type: %s), "
            "which is not an answer it documents; the token is refused",
            shape[0],
            shape[1],
        )

    async def push_file(self, token: str, path: str, text: str) -> None:
        """Commit one file's text to the application's Git files."""
        settings = self.settings
        if not settings.application_id:
            raise PortalUnavailable("Quix__Application__Id is not set: nowhere to save notebooks")
        from urllib.parse import quote

        url_path = (
            f"workspaces/{settings.workspace_id}/files/{settings.application_id}/"
            f"{quote(path, safe='/')}"
        )
        if settings.commit_message_param:
            from urllib.parse import urlencode

            message = {settings.commit_message_param: f"[AutoCommit] Updated {path}"}
            url_path += "?" + urlencode(message)
        status, _, _ = await self._call("POST", url_path, token, raw_body=text)
        if status in (401, 403):
            raise PermissionError("the Quix portal refused to save the file for this user")
        if status >= 400:
            raise PortalRefused(f"the Quix portal answered HTTP {status} for {path}")

    async def delete_file(self, token: str, path: str) -> None:
        """Delete one application file with the configured call (``delete_call``)."""
        settings = self.settings
        if not settings.delete_call or not settings.application_id:
            raise PortalRefused("no call to delete application files is configured")
        from urllib.parse import quote

        call = settings.delete_call
        url_path = call.template.format(
            workspace_id=settings.workspace_id,
            application_id=settings.application_id,
            path=quote(path, safe="/"),
        )
        status, _, _ = await self._call(call.method, url_path, token)
        if status in (401, 403):
            raise PermissionError("the Quix portal refused to delete the file for this user")
        if status >= 400 and status != 404:  # already gone is what we wanted
            raise PortalRefused(f"the Quix portal answered HTTP {status} deleting {path}")

    async def restart_deployment(self, token: str) -> str:
        """One server-side call; returns a message for users, raises on refusal or outage."""
        settings = self.settings
        if not settings.deployment_id:
            raise PortalUnavailable("Quix__Deployment__Id is not set: no deployment to restart")
        call = settings.restart_call
        path = call.template.format(
            workspace_id=settings.workspace_id, deployment_id=settings.deployment_id
        )
        body = [settings.deployment_id] if path.rstrip("/").endswith("deployments/update") else None
        status, _, _ = await self._call(call.method, path, token, body)
        if status in (401, 403):
            raise PermissionError("the Quix portal refused the restart for this user")
        if status >= 400:
            raise PortalUnavailable(f"the Quix portal answered HTTP {status} to the restart")
        return f"Quix accepted the restart of deployment {settings.deployment_id}"
