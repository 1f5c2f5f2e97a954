"""The status board: the single source of truth for phase, steps, readiness and marimo's address.

Jobs write to it through the :class:`jobs.reporting.Reporter` methods; the web routes and the
proxy only read. Every change is published to subscribers (``/-/events``) as a full snapshot, so
a subscriber that missed something is always corrected by the next event.

Invariants: nothing secret is stored in a field that is published (marimo's token lives only in
the :class:`proxy.upstream.Upstream` handed to the proxy, and every published text is redacted);
``ready`` is true exactly while there is an upstream and we are not stopping; a marimo that is
up when another one comes up (a switch, jobs/marimo.py) is replaced in one step: the proxy's
next lookup gets the new upstream, and the old one is retired (its WebSockets closed with the
restart code) and drained (:meth:`StatusBoard.draining`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobs.redact import redact
from jobs.reporting import STEP_NAMES, MarimoExit, Outcome, StepName
from orchestrator.quix.editors import Editors
from proxy.hold import KernelHold
from proxy.upstream import Upstream

log = logging.getLogger("orchestrator")

Phase = Literal["starting", "ready", "degraded", "failed", "stopping"]
StepStatus = Literal["pending", "running", "done", "skipped", "failed"]

DETAIL_LIMIT = 4000
"""Characters of a step's ``detail`` kept (every status event carries it)."""


@dataclass
class Step:
    name: StepName
    status: StepStatus = "pending"
    attempt: int = 0
    max_attempts: int | None = None
    progress: float | None = None
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float | None = None
    expected_seconds: float | None = None
    changes: dict[str, Any] | None = None
    """What the step's last finished run changed in the venv's packages (the requirements
    step: jobs/install_summary.py ``changes``); ``None`` while running, after a failure, and
    for the other steps."""
    detail: str = ""
    """A failed run's tool output (an installer's error lines, jobs/errors.py ``detail``),
    apart from ``message`` so pages show it once, folded; empty otherwise."""


@dataclass
class MarimoInfo:
    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None
    last_output: list[str] = field(default_factory=list)


class Subscriber:
    """One ``/-/events`` client. Bounded: a client that stops reading is dropped, not buffered."""

    def __init__(self, capacity: int = 4096) -> None:
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=capacity)
        self.overflowed = False

    def offer(self, event: str, data: str) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait((event, data))
        except asyncio.QueueFull:
            self.overflowed = True


class StatusBoard:
    def __init__(self, log_capacity: int = 500, boot_id: str | None = None) -> None:
        self.boot_id = boot_id or uuid.uuid4().hex
        self.started_at = time.time()
        self.steps: dict[StepName, Step] = {name: Step(name) for name in STEP_NAMES}
        self.marimo = MarimoInfo()
        self.state: dict[str, Any] = {"path": None, "persistent": None, "warning": None}
        self.environment: dict[str, Any] | None = None
        """Where the Python packages live and their snapshot (jobs/env_location.py)."""
        self.added_by_user: list[dict[str, str]] | None = None
        """The packages a user added (Install button, terminal), as the ledger has them;
        ``None`` while unknown (no ledger watcher: run mode, a state that does not persist)."""
        self.kernel_hold = KernelHold()
        """Closed while marimo serves from a venv still being restored (proxy/hold.py)."""
        self.stopping = False
        self.notice: dict[str, Any] | None = None
        self.logs: deque[dict[str, Any]] = deque(maxlen=log_capacity)
        self.subscribers: set[Subscriber] = set()
        self._upstream: Upstream | None = None
        self._retired: deque[Upstream] = deque(maxlen=4)
        """Upstreams replaced while they still answered (switches), until they are drained."""
        self._generation = 0
        self._secrets: tuple[str, ...] = ()
        self.capabilities: dict[str, bool] = {"restart_deployment": False}
        self.sync: dict[str, Any] | None = None
        """Saving notebook edits back to Quix (shape: README, "Saving notebooks to Quix")."""
        self.editors = Editors()
        """Who edits (fed by the proxy's requests to marimo); read by notebook sync."""
        """What the page may offer (a deployment restart needs Quix)."""
        self.listeners: list[Callable[[str, StepName | None, dict[str, Any]], None]] = []
        """Observers of what happens (metrics): called with an event name, a step and details."""
        self.on_marimo: list[Callable[[bool], None]] = []
        """Called with True when marimo starts serving and False when it goes down."""
        self.on_state: list[Callable[[Path, bool], None]] = []
        """Called once the state directory is known (persistent or not)."""

    # -- readers -------------------------------------------------------------------------------

    def upstream(self) -> Upstream | None:
        """For the proxy: answers at once, never waits."""
        return None if self.stopping else self._upstream

    @property
    def ready(self) -> bool:
        return self.upstream() is not None

    @property
    def phase(self) -> Phase:
        if self.stopping:
            return "stopping"
        if self._upstream is not None:
            troubled = any(step.status == "failed" for step in self.steps.values())
            return "degraded" if troubled or self.state["persistent"] is False else "ready"
        if self.steps["marimo"].status == "failed":
            return "failed"
        return "starting"

    def snapshot(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "ready": self.ready,
            "boot_id": self.boot_id,
            "started_at": self.started_at,
            "at": time.time(),
            "steps": [asdict(step) for step in self.steps.values()],
            "marimo": asdict(self.marimo),
            "state": dict(self.state),
            "environment": self.environment,
            "kernels_held": self.kernel_hold.held,
            "user_packages": None if self.added_by_user is None else list(self.added_by_user),
            "notice": self.notice,
            "capabilities": dict(self.capabilities),
            "sync": self.sync,
        }

    def snapshot_json(self) -> str:
        return json.dumps(self.snapshot(), separators=(",", ":"))

    def subscribe(self, subscriber: Subscriber | None = None) -> Subscriber:
        """Adds ``subscriber`` (a queueing :class:`Subscriber` when None) to every event."""
        subscriber = subscriber or Subscriber()
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    # -- publishing ----------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets)

    def _clean_all(self, value: Any) -> Any:
        """``value`` (JSON-like) with every string in it redacted."""
        if isinstance(value, str):
            return self._clean(value)
        if isinstance(value, list):
            return [self._clean_all(item) for item in value]
        if isinstance(value, dict):
            return {key: self._clean_all(item) for key, item in value.items()}
        return value

    def _publish(self) -> None:
        data = self.snapshot_json()
        for subscriber in self.subscribers:
            subscriber.offer("status", data)

    def _step(self, name: StepName) -> Step:
        return self.steps[name]

    def _tell(self, event: str, step: StepName | None, **data: Any) -> None:
        for listener in self.listeners:
            listener(event, step, data)

    # -- the Reporter protocol (jobs.reporting) -------------------------------------------------

    def step_running(self, step: StepName, message: str) -> None:
        entry = self._step(step)
        if entry.status != "running":
            entry.started_at = time.time()
            entry.finished_at = None
            entry.progress = None
            entry.changes = None
            entry.detail = ""
        entry.status = "running"
        entry.attempt = max(entry.attempt, 1)
        entry.message = self._clean(message)
        entry.next_attempt_at = None
        log.info("%s", entry.message, extra={"step": step})
        self._publish()

    def step_progress(self, step: StepName, message: str, fraction: float | None = None) -> None:
        entry = self._step(step)
        entry.message = self._clean(message)
        if fraction is not None:
            entry.progress = max(0.0, min(1.0, fraction))
        self._publish()

    def step_expected(self, step: StepName, seconds: float) -> None:
        self._step(step).expected_seconds = round(seconds, 1)
        self._publish()

    def step_retrying(
        self, step: StepName, attempt: int, max_attempts: int, delay: float, error: str
    ) -> None:
        entry = self._step(step)
        entry.attempt = attempt
        entry.max_attempts = max_attempts
        entry.next_attempt_at = time.time() + delay
        entry.message = self._clean(
            f"{error} (attempt {attempt} of {max_attempts} in {delay:.0f} s)"
        )
        log.warning("%s", entry.message, extra={"step": step})
        self._tell("retrying", step, attempt=attempt)
        self._publish()

    def step_finished(
        self,
        step: StepName,
        outcome: Outcome,
        message: str,
        *,
        changes: dict[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        entry = self._step(step)
        entry.status = outcome
        entry.message = self._clean(message)
        entry.detail = self._clean(detail)[:DETAIL_LIMIT]
        entry.changes = None if changes is None else self._clean_all(changes)
        entry.finished_at = time.time()
        entry.next_attempt_at = None
        if outcome == "done":
            entry.progress = 1.0
        level = logging.ERROR if outcome == "failed" else logging.INFO
        log.log(level, "%s: %s", outcome, entry.message, extra={"step": step})
        seconds = entry.finished_at - entry.started_at if entry.started_at else None
        self._tell("finished", step, outcome=outcome, seconds=seconds)
        self._publish()

    def log(self, step: StepName | None, source: str, line: str) -> None:
        clean = self._clean(line)
        record = {"t": time.time(), "step": step, "source": source, "line": clean}
        self.logs.append(record)
        log.info("%s", clean, extra={"step": step or "-", "source": source})
        data = json.dumps(record, separators=(",", ":"))
        for subscriber in self.subscribers:
            subscriber.offer("log", data)

    def state_resolved(self, path: Path, persistent: bool, warning: str | None) -> None:
        self.state = {"path": str(path), "persistent": persistent, "warning": warning}
        for listener in self.on_state:
            listener(path, persistent)
        if warning:
            log.warning("%s", warning, extra={"step": "state"})
        self._publish()

    def environment_changed(self, environment: dict[str, Any]) -> None:
        warned = self.environment is not None and self.environment.get("warning")
        self.environment = dict(environment)
        if environment.get("warning") and environment.get("warning") != warned:
            log.warning("%s", environment["warning"], extra={"step": "venv"})
        self._publish()

    def kernels_held(self, held: bool) -> None:
        if held:
            self.kernel_hold.close()
        else:
            self.kernel_hold.open()
        self._publish()

    def user_packages(self, packages: Mapping[str, str]) -> None:
        listed = [
            {"name": self._clean(name), "version": self._clean(version)}
            for name, version in sorted(packages.items())
        ]
        if listed != self.added_by_user:
            self.added_by_user = listed
            self._publish()

    def marimo_up(self, pid: int, host: str, port: int, token: str) -> None:
        self._secrets = (*self._secrets[-4:], token)
        self._generation += 1
        previous = self._upstream
        self._upstream = Upstream.for_marimo(host, port, self._generation, token)
        if previous is not None:  # a switch: the old marimo still answers what it was sent
            previous.traffic.retire()
            self._retired.append(previous)
        self.marimo.pid = pid
        log.info("marimo is ready (pid %s)", pid, extra={"step": "marimo"})
        for listener in self.on_marimo:
            listener(True)
        self._publish()

    def marimo_down(
        self, reason: str, restarts: int, last_output: list[str], kind: MarimoExit
    ) -> None:
        self._upstream = None
        self.marimo.pid = None  # never a dead pid: set again by marimo_up
        self.marimo.restarts = restarts
        self.marimo.last_exit = self._clean(reason)
        if last_output:
            self.marimo.last_output = [self._clean(line) for line in last_output]
        entry = self._step("marimo")
        if entry.status == "done":
            entry.status = "running"
            entry.message = self.marimo.last_exit
            entry.finished_at = None
        log.warning("marimo is down: %s", self.marimo.last_exit, extra={"step": "marimo"})
        self._tell("marimo_down", "marimo", kind=kind)
        for listener in self.on_marimo:
            listener(False)
        self._publish()

    def draining(self) -> int:
        """Requests and WebSockets still open toward marimos that were replaced while up."""
        return sum(upstream.traffic.open for upstream in self._retired)

    def announce(self, message: str) -> None:
        """Something users should know about now (a restart they or someone else asked for)."""
        self.notice = {"message": self._clean(message), "at": time.time()}
        log.info("%s", self.notice["message"])
        self._publish()

    def withdraw_notice(self) -> None:
        if self.notice is not None:
            self.notice = None
            self._publish()

    def sync_changed(self, sync: dict[str, Any]) -> None:
        self.sync = {
            **sync,
            "last_error": self._clean(sync["last_error"]) if sync.get("last_error") else None,
        }
        self._publish()

    def begin_stopping(self) -> None:
        self.stopping = True
        self._publish()
