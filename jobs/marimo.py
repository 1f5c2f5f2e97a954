"""The ``marimo`` step: run marimo from the venv's interpreter and keep it running.

marimo is started as ``<venv>/bin/python -m marimo`` (never the ``marimo`` script): that is what
makes ``sys.prefix != sys.base_prefix`` hold in marimo and its kernels, so marimo offers its
Install button. It listens on a free loopback port and only accepts a random token that the
orchestrator injects; no browser ever sees it.

A marimo that stops answering without exiting (hung) is watched for (jobs/liveness.py) and goes
the way of a crash: reported down, its whole tree killed, started again with the same backoff
and the same count towards a crash loop.

Invariants: :meth:`MarimoSupervisor.stop` and restarts report marimo down *before* the process is
signalled, so the proxy stops routing to it first; every marimo process tree is ended through
:func:`jobs.processes.terminate_tree` (or :func:`jobs.processes.kill_tree` when it is hung);
the liveness watch runs only while a marimo that answered is being watched, and is cancelled
before any restart or stop the supervisor makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from tenacity import wait_exponential_jitter

from jobs.backoff import pause
from jobs.errors import PermanentError, TransientError
from jobs.head_start import HeadStart
from jobs.installers import Installer
from jobs.layout import StateLayout
from jobs.liveness import health_ok, until_hung
from jobs.marimo_command import (
    NOT_RECORDED_WITH_PIP,
    TokenFile,
    configured_manager,
    free_port,
    marimo_argv,
    marimo_environment,
    records_installs,
)
from jobs.processes import (
    AdoptedProcess,
    ChildProcess,
    kill_tree_async,
    lines,
    spawn,
    terminate_tree_async,
)
from jobs.redact import redact
from jobs.reporting import Reporter
from jobs.settings import Liveness, MarimoMode, RunAs

HUNG = "marimo stopped answering; restarting it"
"""What the board says (the step's message, ``marimo.last_exit``) of a hung marimo."""

_RELAUNCH_WAIT = wait_exponential_jitter(initial=1.0, max=30.0, jitter=1.0)
"""Before the next relaunch after quick crash number n: 2**(n-1) s plus up to 1 s, at most 30 s."""


def configure_package_manager(layout: StateLayout, installer: Installer) -> None:
    """Make marimo's Install button use our installer; keep every other user setting.

    A config file that cannot be parsed is kept aside as ``marimo.toml.broken`` (never lost).
    """
    if configured_manager(layout) == installer.name:
        return  # read with the standard library: tomlkit is only needed to write
    import tomlkit

    path = layout.marimo_config
    path.parent.mkdir(parents=True, exist_ok=True)
    document: tomlkit.TOMLDocument
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = tomlkit.document()
    except (OSError, ValueError, tomlkit.exceptions.TOMLKitError):
        path.replace(path.with_name(path.name + ".broken"))
        document = tomlkit.document()
    table = document.get("package_management")
    if not isinstance(table, dict):  # missing, or a string/number/array where a table belongs
        if table is not None:
            path.parent.joinpath(path.name + ".broken").write_text(
                tomlkit.dumps(document), encoding="utf-8"
            )
            del document["package_management"]
        table = tomlkit.table()
        document["package_management"] = table
    if table.get("manager") == installer.name:
        return
    table["manager"] = installer.name
    from jobs.atomic import write_atomically

    write_atomically(path, tomlkit.dumps(document))


class MarimoSupervisor:
    """Starts marimo, waits for it, restarts it when it dies, stops it on request.

    ``max_quick_crashes`` exits within ``stable_after`` seconds of a start, in a row, stop the
    restarts: a crash loop is reported with marimo's last output instead of spinning forever.
    With ``liveness``, a marimo that stops answering is killed and counts as such an exit.
    """

    def __init__(
        self,
        *,
        notebook_dir: Path,
        mode: MarimoMode,
        python: Path,
        layout: StateLayout,
        installer: Installer,
        base_env: Mapping[str, str],
        reporter: Reporter,
        ready_timeout: float,
        max_quick_crashes: int = 5,
        stable_after: float = 30.0,
        head_start: HeadStart | None = None,
        user: RunAs | None = None,
        record_installs: bool = False,
        liveness: Liveness | None = None,
    ) -> None:
        self.notebook_dir = notebook_dir
        self.liveness = liveness
        self.record_installs = record_installs
        self.user = user
        self.mode = mode
        self.python = python
        self.layout = layout
        self.installer = installer
        self.base_env = base_env
        self.reporter = reporter
        self.ready_timeout = ready_timeout
        self.max_quick_crashes = max_quick_crashes
        self.stable_after = stable_after
        self.restarts = 0
        self.output: deque[str] = deque(maxlen=200)
        self._process: ChildProcess | None = None
        self._head_start = head_start
        self._token = ""
        self._stopping = False
        self._deliberate_restart = False
        self._serving: tuple[ChildProcess, int] | None = None
        """The marimo that answered ``/health`` and was reported up, and its port."""
        self._probe: asyncio.Task[None] | None = None
        self._hung: ChildProcess | None = None
        """The marimo the liveness watch declared hung (already reported down)."""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def launch(self) -> None:
        """Start one marimo and return once ``/health`` answers.

        Raises :class:`TransientError` when it exits early (a port race, say) or does not
        answer within ``ready_timeout``; the process is gone when this raises.
        """
        if (head := self._head_start) is not None:
            self._head_start = None  # adopted once: a retry starts a fresh marimo
            if configured_manager(self.layout) == self.installer.name:
                await self._adopt(head)
                return
            # It read a config whose Install button would use another installer.
            await head.discard(self.reporter, "marimo's package manager setting needs writing")
        if not self.python.exists():
            raise PermanentError(f"the interpreter {self.python} for marimo does not exist")
        configure_package_manager(self.layout, self.installer)
        if self.record_installs and self.mode == "edit" and self.installer.name != "uv":
            self.reporter.log("marimo", "orchestrator", NOT_RECORDED_WITH_PIP)
        if self.installer.name == "uv":
            from jobs.image import write_excludes

            write_excludes(self.layout)
        port = free_port()
        token = TokenFile.create(shared=self.user is not None)
        self._token = token.token
        env = marimo_environment(
            self.base_env,
            self.python,
            self.layout,
            self.installer,
            self.user,
            records_installs(self.record_installs, self.mode, self.installer),
        )
        argv = marimo_argv(self.python, self.mode, self.notebook_dir, port, token.path)
        try:
            process = await spawn(argv, env=env, cwd=self.notebook_dir, user=self.user)
            self._process = process
            reader = asyncio.create_task(self._pump(process))
            await self._wait_ready(process, port, reader)
        finally:
            token.remove()
        self._serving = (process, port)
        self.reporter.marimo_up(process.pid, "127.0.0.1", port, self._token)

    async def _adopt(self, head: HeadStart) -> None:
        """Take over the marimo that jobs/head_start.py started; same contract as :meth:`launch`."""
        self._token = head.token.token
        try:
            process = await AdoptedProcess.adopt(head.popen)
            self._process = process
            reader = asyncio.create_task(self._pump(process))
            await self._wait_ready(process, head.port, reader)
        finally:
            head.token.remove()
        self._serving = (process, head.port)
        self.reporter.marimo_up(process.pid, "127.0.0.1", head.port, self._token)

    async def _pump(self, process: ChildProcess) -> None:
        async for line in lines(process):
            clean = redact(line, (self._token,))
            self.output.append(clean)
            self.reporter.log("marimo", "marimo", clean)

    async def _wait_ready(
        self, process: ChildProcess, port: int, reader: asyncio.Task[None]
    ) -> None:
        started = time.monotonic()
        deadline = started + self.ready_timeout
        while True:
            # Every 5 ms while a normal start could still be under way (a refused connection
            # costs microseconds, and every millisecond here is one users wait), then every
            # 100 ms.
            delay = 0.005 if time.monotonic() - started < 10.0 else 0.1
            if process.returncode is not None:
                await reader
                raise TransientError(
                    f"marimo exited with code {process.returncode} before it was ready: "
                    + " ".join(list(self.output)[-3:])
                )
            if await health_ok(port):
                return
            if time.monotonic() > deadline:
                await terminate_tree_async(process.pid)
                raise TransientError(f"marimo did not answer within {self.ready_timeout:.0f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), timeout=delay)

    async def watch(self) -> None:
        """Keep marimo running until :meth:`stop`; returns when restarts are given up."""
        quick_crashes = 0
        while not self._stopping:
            process = self._process
            if process is None:
                return
            started = time.monotonic()
            self._watch_liveness(process)
            try:
                code = await process.wait()
            finally:
                self._stop_probe()
            if self._stopping:
                return
            hung, self._hung = self._hung is process, None
            if self._deliberate_restart:
                self._deliberate_restart = False
                quick_crashes = 0
            else:
                quick_crashes = (
                    quick_crashes + 1 if time.monotonic() - started < self.stable_after else 1
                )
                if not hung:  # a hung marimo was reported down before it was killed
                    self.restarts += 1
                    reason = f"marimo exited unexpectedly with code {code}"
                    self.reporter.marimo_down(
                        reason, self.restarts, list(self.output)[-20:], "crash"
                    )
                # Whatever it left behind (kernels keep its process group, and its listening
                # socket, alive) goes with it before a new one starts.
                await terminate_tree_async(process.pid, timeout=2.0)
                if quick_crashes >= self.max_quick_crashes:
                    what = "stopped answering" if hung else "crashed"
                    raise PermanentError(
                        f"marimo {what} {quick_crashes} times in a row; giving up: "
                        + " ".join(list(self.output)[-3:])
                    )
            await self._relaunch(quick_crashes, HUNG if hung else None)

    def _watch_liveness(self, process: ChildProcess) -> None:
        """Start probing ``process`` if it is the marimo that answered and was reported up."""
        liveness, serving = self.liveness, self._serving
        if liveness is None or not liveness.enabled or serving is None:
            return
        served, port = serving
        if served is not process or process.returncode is not None:
            return  # a relaunch that failed: it exits, and the loop counts it

        async def probe() -> None:
            why = await until_hung(port, liveness)
            if self._stopping or self._deliberate_restart or process.returncode is not None:
                return
            self._hung = process
            self.restarts += 1
            self.reporter.log("marimo", "orchestrator", f"marimo (pid {process.pid}): {why}")
            self.reporter.marimo_down(HUNG, self.restarts, list(self.output)[-20:], "hang")
            try:
                await kill_tree_async(process.pid, timeout=2.0)
            except Exception as error:  # never silently: watch() ends what is left
                self.reporter.log("marimo", "orchestrator", f"killing marimo failed: {error!r}")

        self._probe = asyncio.create_task(probe(), name="marimo-liveness")

    def _stop_probe(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    async def _relaunch(self, attempt: int, why: str | None = None) -> None:
        """Start marimo again, after the backoff for ``attempt`` quick exits; ``why`` is what
        the board says meanwhile (a plain "Restarting marimo" when None)."""
        if attempt:
            delay = pause(_RELAUNCH_WAIT, attempt)
            self.reporter.step_retrying(
                "marimo", attempt + 1, self.max_quick_crashes, delay, why or "marimo exited"
            )
            await asyncio.sleep(delay)
        if self._stopping:
            return
        self.reporter.step_running("marimo", why or "Restarting marimo")
        self._serving = None
        try:
            await self.launch()
        except TransientError as error:
            self.reporter.log("marimo", "orchestrator", str(error))
            # The next loop turn sees the exited process and counts it as a quick crash.
        else:
            self.reporter.step_finished("marimo", "done", f"marimo is running (pid {self.pid})")

    async def restart(self, reason: str = "restart requested") -> None:
        """A deliberate restart: reported, then the old tree is ended; :meth:`watch` relaunches."""
        if self._process is None:
            return
        self._stop_probe()  # a marimo stopped on purpose is not a hung one
        self._deliberate_restart = True
        self.reporter.marimo_down(reason, self.restarts, [], "requested")
        await terminate_tree_async(self._process.pid)

    async def stop(self) -> None:
        self._stopping = True
        self._stop_probe()
        if (head := self._head_start) is not None:  # stopped before it was adopted
            self._head_start = None
            await head.discard(self.reporter, "stopping")
        if self._process is not None and self._process.returncode is None:
            self.reporter.marimo_down("stopping", self.restarts, [], "stopping")
            await terminate_tree_async(self._process.pid)
