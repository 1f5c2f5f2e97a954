"""The ``marimo`` step: run marimo from the venv's interpreter and keep it running.

marimo is started as ``<venv>/bin/python -m marimo`` (never the ``marimo`` script): that is what
makes ``sys.prefix != sys.base_prefix`` hold in marimo and its kernels, so marimo offers its
Install button. It listens on a free loopback port and only accepts a random token that the
orchestrator injects; no browser ever sees it.

A marimo that stops answering without exiting (hung) is watched for (jobs/liveness.py) and goes
the way of a crash: reported down, its whole tree killed, started again with the same backoff
and the same count towards a crash loop.

Moving to another environment (run mode, a new generation: jobs/replicas.py) is a *switch*, not
a restart: :meth:`MarimoSupervisor.switch` starts the new marimo beside the running one (its own
port and token, the new venv's interpreter), and only once it answers ``/health`` reports it up,
which replaces the proxy's upstream in one step; the old one is then drained (what the proxy
still has open toward it, at most ``Switching.drain`` seconds) and its whole tree ended. A
switch is no crash and no hang: nothing is reported down, no restart is counted, and the
liveness watch moves to the new process. Two marimos run only for the switch, and only when
there is memory for both (jobs/switch_room.py); else the caller stops marimo first, as before.

Invariants: :meth:`MarimoSupervisor.stop` and restarts report marimo down *before* the process is
signalled, so the proxy stops routing to it first; every marimo process tree is ended through
:func:`jobs.processes.terminate_tree` (or :func:`jobs.processes.kill_tree` when it is hung);
the liveness watch runs only while a marimo that answered is being watched, and is cancelled
before any restart, switch or stop the supervisor makes; at most one switch runs at a time, and
a marimo being started or drained by a switch is ended by :meth:`MarimoSupervisor.stop` too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tenacity import wait_exponential_jitter

from jobs.backoff import pause
from jobs.errors import PermanentError, TransientError
from jobs.head_start import HeadStart
from jobs.installers import Installer
from jobs.layout import StateLayout
from jobs.liveness import until_hung, wait_ready
from jobs.marimo_command import (
    NOT_RECORDED_WITH_PIP,
    TokenFile,
    free_port,
    marimo_argv,
    marimo_environment,
    records_installs,
)
from jobs.marimo_config import configure_package_manager, configured_manager
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
from jobs.settings import Liveness, MarimoMode, RunAs, Switching
from jobs.switch_room import available_memory, why_no_room

HUNG = "marimo stopped answering; restarting it"
"""What the board says (the step's message, ``marimo.last_exit``) of a hung marimo."""

_RELAUNCH_WAIT = wait_exponential_jitter(initial=1.0, max=30.0, jitter=1.0)
"""Before the next relaunch after quick crash number n: 2**(n-1) s plus up to 1 s, at most 30 s."""

_DRAIN_POLL = 0.05
"""Seconds between two looks at what is still open toward a marimo being drained."""


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
        stable_after: float,
        head_start: HeadStart | None = None,
        user: RunAs | None = None,
        record_installs: bool,
        liveness: Liveness | None = None,
        switching: Switching | None = None,
        memory: Callable[[], int] = available_memory,
    ) -> None:
        self.notebook_dir = notebook_dir
        self.liveness = liveness
        self.switching = switching
        self._memory = memory
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
        self._tokens: tuple[str, ...] = ()
        """The tokens of the marimos whose output may still come (kept out of the log)."""
        self._candidate: ChildProcess | None = None
        """The marimo a switch is starting beside the served one, until it answers."""
        self._switch: asyncio.Future[bool] | None = None
        """The switch under way (its result: whether it replaced the served marimo)."""
        self._handover: asyncio.Future[None] | None = None
        """Resolved by a switch once another marimo is served: :meth:`watch` follows it."""
        self._retiring: set[ChildProcess] = set()
        """Marimos a switch replaced, being drained before their tree is ended."""

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
        process, port, self._token = await self._start(self.python, self.layout, beside=False)
        self._serving = (process, port)
        self.reporter.marimo_up(process.pid, "127.0.0.1", port, self._token)

    async def _start(
        self, python: Path, layout: StateLayout, *, beside: bool
    ) -> tuple[ChildProcess, int, str]:
        """A new marimo on ``python`` answering ``/health``: the process, its port and token.

        It becomes :attr:`_process` at once unless it starts ``beside`` the served one (a
        switch), then it is :attr:`_candidate` until this returns. Raises as :meth:`launch`.
        """
        if not python.exists():
            raise PermanentError(f"the interpreter {python} for marimo does not exist")
        configure_package_manager(layout, self.installer)
        if self.record_installs and self.mode == "edit" and self.installer.name != "uv":
            self.reporter.log("marimo", "orchestrator", NOT_RECORDED_WITH_PIP)
        if self.installer.name == "uv":
            from jobs.image import write_excludes

            write_excludes(layout)
        port = free_port()
        token = TokenFile.create(shared=self.user is not None)
        self._tokens = (*self._tokens[-2:], token.token)
        env = marimo_environment(
            self.base_env,
            python,
            layout,
            self.installer,
            self.user,
            records_installs(self.record_installs, self.mode, self.installer),
        )
        argv = marimo_argv(python, self.mode, self.notebook_dir, port, token.path)
        try:
            process = await spawn(argv, env=env, cwd=self.notebook_dir, user=self.user)
            if beside:
                self._candidate = process
            else:
                self._process = process
            reader = asyncio.create_task(self._pump(process))
            await wait_ready(process, port, reader, self.ready_timeout, self.output)
        finally:
            token.remove()
        return process, port, token.token

    async def _adopt(self, head: HeadStart) -> None:
        """Take over the marimo that jobs/head_start.py started; same contract as :meth:`launch`."""
        self._token = head.token.token
        self._tokens = (*self._tokens[-2:], self._token)
        try:
            process = await AdoptedProcess.adopt(head.popen)
            self._process = process
            reader = asyncio.create_task(self._pump(process))
            await wait_ready(process, head.port, reader, self.ready_timeout, self.output)
        finally:
            head.token.remove()
        self._serving = (process, head.port)
        self.reporter.marimo_up(process.pid, "127.0.0.1", head.port, self._token)

    async def _pump(self, process: ChildProcess) -> None:
        async for line in lines(process):
            clean = redact(line, self._tokens)
            self.output.append(clean)
            self.reporter.log("marimo", "marimo", clean)

    async def watch(self) -> None:
        """Keep marimo running until :meth:`stop`; returns when restarts are given up."""
        quick_crashes = 0
        while not self._stopping:
            process = self._process
            if process is None:
                return
            started = time.monotonic()
            self._watch_liveness(process)
            handover = self._handover = asyncio.get_running_loop().create_future()
            try:
                code = await self._exit_or_handover(process, handover)
            finally:
                self._stop_probe()
            if self._stopping:
                return
            if code is None or process is not self._process:
                quick_crashes = 0  # switched: the new marimo is watched from now on
                continue
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
            switch = self._switch
            if switch is not None and await asyncio.shield(switch):
                continue  # a marimo started beside this one by a switch serves instead
            if quick_crashes >= self.max_quick_crashes:
                what = "stopped answering" if hung else "crashed"
                raise PermanentError(
                    f"marimo {what} {quick_crashes} times in a row; giving up: "
                    + " ".join(list(self.output)[-3:])
                )
            await self._relaunch(quick_crashes, HUNG if hung else None)

    @staticmethod
    async def _exit_or_handover(
        process: ChildProcess, handover: asyncio.Future[None]
    ) -> int | None:
        """``process``'s exit code, or None once a switch served another marimo instead."""
        exited = asyncio.ensure_future(process.wait())
        waiting: set[asyncio.Future[Any]] = {exited, handover}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not exited.done():
                exited.cancel()
        return exited.result() if exited.done() and not exited.cancelled() else None

    def _watch_liveness(self, process: ChildProcess) -> None:
        """Start probing ``process`` if it is the marimo that answered and was reported up."""
        liveness, serving = self.liveness, self._serving
        if liveness is None or not liveness.enabled or serving is None:
            return
        served, port = serving
        if served is not process or process.returncode is not None:
            return  # a relaunch that failed: it exits, and the loop counts it

        async def probe() -> None:
            why = await until_hung(port, liveness, pid=process.pid)
            if (
                self._stopping
                or self._deliberate_restart
                or process.returncode is not None
                or process is not self._process  # switched away from: drained, not hung
            ):
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

    async def switch(self, python: Path, layout: StateLayout) -> str | None:
        """Serve marimo from ``python`` (``layout``'s venv) from now on without a moment
        without marimo: started beside the served one, reported up once it answers (the
        proxy's upstream changes then, in one step), the old one drained and its tree ended.

        Returns None once switched, else why not, with nothing changed (the served marimo
        keeps serving): no marimo serving, no switch settings, not enough memory for two
        (jobs/switch_room.py), or the new one did not start (it is gone then). The caller
        may then stop and start marimo as a restart does.
        """
        serving, settings = self._serving, self.switching
        if settings is None:
            return "switching beside the running marimo is off"
        if self._switch is not None:
            return "another switch is under way"
        if serving is None or self._stopping:
            return "no marimo is serving"
        old = serving[0]
        if old is not self._process or old.returncode is not None:
            return "no marimo is serving"
        loop = asyncio.get_running_loop()
        why = await loop.run_in_executor(None, why_no_room, old.pid, settings.margin, self._memory)
        if why is not None:
            return why
        self._switch = switch = loop.create_future()
        try:
            self.reporter.log(
                "marimo", "orchestrator", f"Starting marimo on {python} beside the running one"
            )
            try:
                process, port, token = await self._start(python, layout, beside=True)
            except (TransientError, PermanentError, OSError) as error:
                return f"the new marimo did not start: {error}"
            except asyncio.CancelledError:  # the orchestrator stops: so does the new one
                if (candidate := self._candidate) is not None and candidate.returncode is None:
                    await terminate_tree_async(candidate.pid)
                raise
            finally:
                self._candidate = None
            if self._stopping:
                await terminate_tree_async(process.pid)
                return "stopping"
            self._stop_probe()  # the old one is drained from now on, not watched
            old = self._process or old
            self.python, self.layout = python, layout
            self._process, self._serving, self._token = process, (process, port), token
            self.reporter.marimo_up(process.pid, "127.0.0.1", port, token)
            self.reporter.step_finished("marimo", "done", f"marimo is running (pid {process.pid})")
            switch.set_result(True)
            if self._handover is not None and not self._handover.done():
                self._handover.set_result(None)
            await self._retire(old, settings.drain)
            return None
        finally:
            if not switch.done():
                switch.set_result(False)
            self._switch = None

    async def _retire(self, old: ChildProcess, drain: float) -> None:
        """Let ``old`` answer what the proxy still has open toward it, for at most ``drain``
        seconds, then end its whole tree."""
        self._retiring.add(old)
        try:  # however this ends (even cancelled: the orchestrator stops), the old tree goes
            loop = asyncio.get_running_loop()
            deadline = loop.time() + drain
            while (
                self.reporter.draining()
                and old.returncode is None
                and not self._stopping
                and loop.time() < deadline
            ):
                await asyncio.sleep(_DRAIN_POLL)
            left = self.reporter.draining()
            if left and old.returncode is None and not self._stopping:
                self.reporter.log(
                    "marimo",
                    "orchestrator",
                    f"{left} requests or WebSockets to the previous marimo (pid {old.pid}) were "
                    f"still open after {drain:g} s (--marimo-switch-drain); stopping it anyway",
                )
        finally:
            await terminate_tree_async(old.pid)
            self._retiring.discard(old)
        self.reporter.log("marimo", "orchestrator", f"Stopped the previous marimo (pid {old.pid})")

    async def stop(self) -> None:
        self._stopping = True
        self._stop_probe()
        if (head := self._head_start) is not None:  # stopped before it was adopted
            self._head_start = None
            await head.discard(self.reporter, "stopping")
        if self._process is not None and self._process.returncode is None:
            self.reporter.marimo_down("stopping", self.restarts, [], "stopping")
            await terminate_tree_async(self._process.pid)
        for other in [self._candidate, *self._retiring]:
            if other is not None and other.returncode is None:
                await terminate_tree_async(other.pid)
