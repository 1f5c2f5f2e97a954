"""podman for the container tests: the private storage of tests/container/build-images.sh, and
containers that are always removed, even when a test fails."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")

LABEL = "marimo-orchestrator-test=1"

# What the tests measured, printed at the end of the run (see conftest.py).
TIMINGS: dict[str, float] = {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def poll(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.02) -> T:
    """``check()`` until it returns something other than None; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
        except (requests.RequestException, OSError) as error:
            last_error = error
            result = None
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last error: {last_error})")
        time.sleep(interval)


@dataclass
class Container:
    podman: Podman
    name: str
    port: int
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        """GET as a signed-in user (token mode: the access token as a Bearer)."""
        signed_in = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return requests.get(self.url + path, headers=signed_in, timeout=5)

    def status(self) -> dict[str, object]:
        answer = self.get("/-/status")
        answer.raise_for_status()
        data: dict[str, object] = answer.json()
        return data

    def step(self, name: str) -> dict[str, object]:
        steps = self.status()["steps"]
        assert isinstance(steps, list)
        for step in steps:
            if step["name"] == name:
                return dict(step)
        raise AssertionError(f"no step {name!r} in /-/status")

    def exec(self, *argv: str, user: str | None = None, env: dict[str, str] | None = None) -> str:
        options: list[str] = []
        if user is not None:
            options += ["--user", user]
        for key, value in (env or {}).items():
            options += ["--env", f"{key}={value}"]
        return self.podman.check("exec", *options, self.name, *argv)

    def inspect(self, template: str) -> str:
        return self.podman.check("inspect", "--format", template, self.name).strip()

    def logs(self) -> str:
        result = self.podman.run("logs", self.name)
        return result.stdout + result.stderr


@dataclass
class Podman:
    """The ``podman`` wrapper written by build-images.sh (its storage, its containers.conf)."""

    executable: str
    started: list[str] = field(default_factory=list)

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.executable, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def check(self, *argv: str, timeout: float = 120) -> str:
        result = self.run(*argv, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(argv)} exited with {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def start(
        self,
        image: str,
        *,
        env: dict[str, str],
        volumes: Sequence[str] = (),
        options: Sequence[str] = (),
        command: Sequence[str] = (),
    ) -> tuple[Container, float]:
        """``podman run -d`` on the host network; returns the container and when run returned
        (``time.monotonic()``). The orchestrator listens on a free port of the host, in token
        mode with a token of the test's choosing."""
        name = f"mo-test-{uuid.uuid4().hex[:10]}"
        port = free_port()
        token = secrets.token_urlsafe(16)
        argv = ["run", "--detach", "--name", name, "--label", LABEL, "--network", "host"]
        listen = {
            # The host's network: listen on its loopback only, on a port nobody else uses.
            "ORCHESTRATOR_HOST": "127.0.0.1",
            "ORCHESTRATOR_PORT": str(port),
            "ORCHESTRATOR_TOKEN": token,
        }
        for key, value in {**env, **listen}.items():
            argv += ["--env", f"{key}={value}"]
        for volume in volumes:
            argv += ["--volume", volume]
        self.started.append(name)
        self.check(*argv, *options, image, *command)
        return Container(self, name, port, token), time.monotonic()

    def remove_all(self) -> None:
        """Remove every container this object started, running or not."""
        for name in self.started:
            self.run("rm", "--force", "--time", "2", name)
        self.started.clear()


def processes_in_cgroup_of(container_id: str) -> list[int]:
    """Host pids whose cgroup names the container: what would be left behind after a stop."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text(encoding="utf-8")
        except OSError:
            continue
        if container_id in cgroups:
            found.append(int(entry.name))
    return found
