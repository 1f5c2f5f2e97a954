"""Run the real orchestrator (``python -m orchestrator``) as a child process, and watch it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from tests.support.status_stream import StatusStream

ROOT = Path(__file__).resolve().parents[2]
QUIET = 0.5
"""Seconds of a quiet event stream after which a wait asks ``/-/status`` itself."""
OBSERVE_EVERY = 0.05
"""At most this often a wait calls :meth:`StatusClient.observed` (an Orchestrator's scan of
its process tree, ~2.5 ms of CPU): as often as the 50 ms polling before, however fast the
statuses come (an install publishes its progress many times a second)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """``pid`` stopped (SIGSTOP, as a deadlocked or starved process looks) for the block; it is
    always continued (SIGCONT) when the block ends, however it ends, unless it is gone."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGCONT)


def hermetic_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without the machine's installer settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "UV_", "ORCHESTRATOR_", "Quix__", "VIRTUAL_ENV"))
    }
    env["PIP_CONFIG_FILE"] = "/dev/null"
    env["UV_NO_CONFIG"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def quix_layout_env(portal_env: Mapping[str, str], state_dir: Path) -> dict[str, str]:
    """What Quix injects into a deployment with state on, its volume mounted at ``state_dir``."""
    return {
        **portal_env,
        "Quix__Deployment__State__Path": str(state_dir),
        "Quix__Deployment__State__Enabled": "true",
    }


class StatusClient:
    """What a test asks of an orchestrator over HTTP, whichever way it runs (a process here, or
    in the test's own process, tests/support/in_process.py): ``base`` and ``token`` are set by
    the subclass, which may also say when waiting is pointless (:meth:`check_running`)."""

    port: int
    base: str
    token: str | None
    wait_timeout: float = 120

    def log_text(self) -> str:
        raise NotImplementedError

    def check_running(self) -> None:
        """Raise ``AssertionError`` when the orchestrator has ended (nothing left to wait for)."""

    def observed(self) -> None:
        """Called after every status read while waiting."""

    @property
    def auth(self) -> dict[str, str]:
        """What an API client sends to get in."""
        return {"Authorization": f"Bearer {self.token}"}

    def get(
        self,
        path: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10,
        *,
        signed_in: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        merged = {**(self.auth if signed_in else {}), **(headers or {})}
        return http_get(self.base + path, merged, timeout)

    def status(self) -> dict[str, Any]:
        code, _, body = self.get("/-/status")
        assert code == 200, body
        return dict(json.loads(body))

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float | None = None,
        what: str = "condition",
    ) -> dict[str, Any]:
        """Until ``predicate`` holds for a status, fail with the last status and the log.

        Each status the orchestrator publishes on ``/-/events`` is tried as it comes (no
        polling while nothing changes); when the stream is quiet for :data:`QUIET` seconds,
        ``/-/status`` is asked directly, so a condition no event announces still ends the wait.
        A stream that ends (restart, replacement) or cannot open yet is opened again."""
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        last: dict[str, Any] = {}
        stream: StatusStream | None = None
        observed_at = 0.0
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                self.check_running()
                statuses: list[dict[str, Any]] = []
                try:
                    stream = stream or StatusStream(self.port, self.auth, min(remaining, 5))
                    statuses = stream.statuses(min(QUIET, remaining))
                except OSError:
                    if stream is not None:
                        stream.close()
                        stream = None
                if not statuses:
                    try:
                        statuses = [self.status()]
                    except (OSError, AssertionError):
                        time.sleep(0.05)
                        continue
                if time.monotonic() - observed_at >= OBSERVE_EVERY:
                    observed_at = time.monotonic()
                    self.observed()
                for last in statuses:
                    if predicate(last):
                        return last
                if stream is None:
                    time.sleep(0.05)  # polling while the stream cannot open
        finally:
            if stream is not None:
                stream.close()
        raise AssertionError(f"timed out waiting for {what}; last status {last}\n{self.log_text()}")

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        return self.wait_for(lambda s: bool(s["ready"]), timeout, "ready")


class Orchestrator(StatusClient):
    def __init__(
        self,
        notebook_dir: Path,
        state_dir: Path,
        log_path: Path,
        env: Mapping[str, str],
        args: tuple[str, ...] = (),
        port: int | None = None,
        prefix: tuple[str, ...] = (),
        token: str | None = None,
    ) -> None:
        """``prefix``: a command the orchestrator runs under (e.g. ``setpriv`` options).
        ``token``: the access token (``--token``) unless ``args`` choose; a fresh one if None."""
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = token or "test-token-" + secrets.token_hex(8)
        if not any(arg.startswith("--auth") or arg == "--token" for arg in args):
            args = ("--token", self.token, *args)
        self.log_path = log_path
        self.state_dir = state_dir
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "orchestrator",
                str(notebook_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--state-dir",
                str(state_dir),
                *args,
            ],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen_pids: set[int] = {self.process.pid}

    # -- observation ---------------------------------------------------------------------------

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def remember_tree(self) -> None:
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen_pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"orchestrator exited ({self.process.returncode}):\n{self.log_text()}"
            )

    def observed(self) -> None:
        self.remember_tree()

    def wait_listening(self, timeout: float = 10) -> float:
        """Seconds from spawn to the first answer on the public port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                code, _, _ = self.get("/-/healthy", timeout=2)
                if code == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                time.sleep(0.01)
        raise AssertionError(f"the port never answered:\n{self.log_text()}")

    def marimo_install(self, package: str, session: str | None = None) -> dict[str, Any]:
        """Exactly what marimo's Install button sends: POST /api/packages/add, through the proxy
        (with marimo's skew-protection token from its page). ``session``: an open notebook's
        (:meth:`open_session`), which marimo then records the package in."""
        return self.marimo_post("/api/packages/add", {"package": package}, session)

    def marimo_uninstall(self, package: str, session: str | None = None) -> dict[str, Any]:
        """What marimo's Packages pane sends to remove a package (POST /api/packages/remove)."""
        return self.marimo_post("/api/packages/remove", {"package": package}, session)

    def marimo_open(self, session: str) -> dict[str, Any]:
        """What marimo's page sends once a notebook's kernel is ready (POST
        /api/kernel/instantiate): the cells are registered and run, as in an editor tab."""
        body = {"objectIds": [], "values": [], "autoRun": True}
        return self.marimo_post("/api/kernel/instantiate", body, session)

    def marimo_post(self, path: str, body: dict[str, Any], session: str | None) -> dict[str, Any]:
        """POST ``body`` to marimo's API through the proxy, as marimo's page does (with its
        skew-protection token and the tab's ``Marimo-Session-Id``)."""
        _, _, page = self.get("/", {"Accept": "text/html"})
        token = re.search(rb'<marimo-server-token data-token="([^"]+)"', page)
        assert token, "marimo's page carries its server token"
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={
                "Marimo-Server-Token": token.group(1).decode(),
                "Content-Type": "application/json",
                **({"Marimo-Session-Id": session} if session else {}),
                **self.auth,
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return dict(json.loads(response.read()))

    @contextlib.contextmanager
    def open_session(self, notebook: str = "notebook.py", timeout: float = 60) -> Iterator[str]:
        """An editor tab's session on ``notebook`` (its kernel ready), through the proxy; yields
        its id (the ``Marimo-Session-Id`` marimo's page sends)."""
        from websockets.sync.client import connect

        session = secrets.token_hex(8)
        ws_url = f"ws://127.0.0.1:{self.port}/ws?session_id={session}&file={notebook}"
        with connect(ws_url, additional_headers=self.auth, open_timeout=timeout) as socket_:
            while json.loads(socket_.recv(timeout=timeout))["op"] != "kernel-ready":
                pass
            yield session

    def kernel_output(self, code: str, notebook: str = "notebook.py", timeout: float = 60) -> str:
        """Run ``code`` in a kernel of marimo's, through the proxy, as its scratchpad does
        (``POST /api/kernel/execute`` in an open session); returns what it printed."""
        with self.open_session(notebook, timeout) as session:
            request = urllib.request.Request(
                self.base + "/api/kernel/execute",
                data=json.dumps({"code": code}).encode(),
                headers={
                    "Content-Type": "application/json",
                    "Marimo-Session-Id": session,
                    **self.auth,
                },
                method="POST",
            )
            printed: list[str] = []
            with urllib.request.urlopen(request, timeout=timeout) as response:
                event = ""
                for raw in response:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("event: "):
                        event = line[7:]
                        if event == "done":
                            break
                    elif line.startswith("data: ") and event == "stdout":
                        printed.append(str(json.loads(line[6:])["data"]))
        return "".join(printed)

    @staticmethod
    def step(status: dict[str, Any], name: str) -> dict[str, Any]:
        return next(step for step in status["steps"] if step["name"] == name)

    # -- ending --------------------------------------------------------------------------------

    def terminate(self, timeout: float = 10) -> int:
        self.remember_tree()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def leftovers(self) -> list[int]:
        alive = []
        for pid in self.seen_pids:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def kill_everything(self) -> None:
        """Teardown of last resort: whatever the test did, nothing survives it."""
        self.remember_tree()
        for pid in self.seen_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        if not self._log.closed:
            self._log.close()


OrchestratorFactory = Callable[..., Orchestrator]
"""The ``orchestrator`` fixture (tests/conftest.py): starts one, ended at the test's teardown."""
