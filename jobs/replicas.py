"""Run mode on a persistent state folder: the replicas that share it, and which environment
generation (jobs/generations.py) this one serves from.

Using a finished generation needs no lease and no installer, so every replica serves as soon as
one exists for its requirements. Building one needs the build lease (jobs/lease.py): one replica
builds, beside the generation in use, and publishes it when its requirements installed; the
others wait and follow. Moving marimo onto a newly published generation needs the move lease,
so replicas move one at a time while the others keep serving; each switches to a marimo
started beside its running one (jobs/marimo.py), so it keeps serving too.

Invariants: a lease is held only inside :func:`holding`, whose heartbeat keeps it alive and whose
exit gives it up; this replica's use record names the generation its marimo runs from (kept
fresh by :meth:`Replicas.watch`, removed by :meth:`Replicas.leave`), so a generation is never
collected from under a running marimo; a build that failed for some requirements is not retried
until they change. "The requirements" are every declared source (jobs/sources.py): a new
generation is needed exactly when their digest or the published pointer changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from tenacity import wait_exponential

from jobs import declared_install as declared_job
from jobs import generations
from jobs import venv as venv_job
from jobs.backoff import pause
from jobs.environment import EnvironmentSteps
from jobs.installers import Installer
from jobs.interpreter import Interpreter
from jobs.layout import StateLayout
from jobs.lease import Lease, LeaseWaiter, holder_id
from jobs.local_env import local_copy, prune_local_copies, snapshot_for_replicas
from jobs.manifest import Manifest
from jobs.reporting import StepTracker
from jobs.settings import JobSettings

_PUBLISHED_POLL = wait_exponential(multiplier=0.2, max=0.5)
"""Looking again for the environment another replica builds: reading the pointer is cheap."""


class Host(Protocol):
    """What the replicas ask of the pipeline that holds them (jobs/runner.py): its marimo."""

    @property
    def head_start_python(self) -> Path | None:
        """The interpreter of the marimo started early, while there is one to adopt."""

    async def drop_head_start(self, reason: str) -> None:
        """End the marimo started early, if any, saying why."""

    async def move_marimo(self, layout: StateLayout) -> None:
        """Serve marimo from ``layout``'s venv from now on: once this returns, the marimo that
        ran from the previous one is gone, and the new one serves or is being started."""


@contextlib.asynccontextmanager
async def holding(lease: Lease, reporter: StepTracker) -> AsyncIterator[None]:
    """Keep ``lease`` alive with its heartbeat for the block, then give it up."""
    loop = asyncio.get_running_loop()

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(lease.ttl / 4)
            if not await loop.run_in_executor(None, lease.beat):
                reporter.log(None, "orchestrator", f"Lost the lease {lease.path} (expired)")
                return

    task = asyncio.create_task(heartbeat(), name="lease-heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await loop.run_in_executor(None, lease.release)


async def take(waiter: LeaseWaiter) -> Lease | None:
    """The lease when it is free (or its holder's expired), else ``None``, without waiting."""
    return await asyncio.get_running_loop().run_in_executor(None, waiter.try_take)


async def wait_for(waiter: LeaseWaiter, poll: float) -> Lease:
    """The lease, however long its holders keep it (trying again every ``poll`` seconds)."""
    while (lease := await take(waiter)) is None:
        await asyncio.sleep(poll)
    return lease


class Replicas:
    """This replica's share of the state folder ``root``: the generation it uses, and what it
    builds, follows and moves to."""

    def __init__(
        self,
        root: StateLayout,
        settings: JobSettings,
        reporter: StepTracker,
        steps: EnvironmentSteps,
        host: Host,
    ) -> None:
        self.root = root
        self._steps = steps
        self.settings = settings
        self.reporter = reporter
        self._host = host
        self._env = dict(settings.env)
        self._holder = holder_id()
        self._image_key = ""
        self._using: StateLayout | None = None
        self._failed_build: str | None = None
        self._settled: tuple[StateLayout | None, str] | None = None

    def _lease(self, path: Path) -> LeaseWaiter:
        return LeaseWaiter(path, self.settings.lease_seconds)

    async def environment(self, installer: Installer) -> tuple[StateLayout, Path | None]:
        """The generation to serve from and its interpreter (``None``: its venv failed): the
        published one when it is finished (no lease, no installer), else one built under the
        build lease, else the one the replica that builds it publishes. A dead builder's lease
        expires and this replica takes over."""
        loop = asyncio.get_running_loop()
        if not self._image_key:
            self._image_key = await loop.run_in_executor(None, generations.image_key)
        waiter = self._lease(self.root.build_lease)
        self.reporter.step_running(
            "venv", f"Looking for a finished environment in {self.root.envs}"
        )
        tries = 0
        while True:
            generation = await self._ready(installer)
            if generation is None and (lease := await take(waiter)):
                async with holding(lease, self.reporter):
                    generation = await self._ready(installer)
                    if generation is None:
                        await self._host.drop_head_start("a new environment is being built")
                        built, python = await self._build(installer)
                        self._use(built)
                        return built, python
            if generation is not None:
                if self._host.head_start_python not in (None, generation.venv_python):
                    await self._host.drop_head_start("another environment was published")
                self._use(generation)
                self.reporter.step_finished("venv", "done", f"Using the venv at {generation.venv}")
                self.reporter.step_finished(
                    "requirements",
                    "skipped",
                    f"{self.settings.requirements.name} is installed in the shared environment",
                )
                return generation, generation.venv_python
            await self._host.drop_head_start("another replica is building the environment")
            holder = await loop.run_in_executor(None, waiter.holder)
            self.reporter.step_progress(
                "venv",
                f"Another replica{f' ({holder})' if holder else ''} is building the environment "
                f"in {self.root.envs}; this one serves as soon as it is finished",
            )
            tries += 1
            await asyncio.sleep(pause(_PUBLISHED_POLL, tries))

    def _digest(self) -> str:
        """What every declared source holds now (blocking): a new one needs a new generation."""
        return self._steps.declared().digest

    def _finished(self, layout: StateLayout, installer: Installer) -> bool:
        """A finished environment for this Python and these requirements is at ``layout``."""
        manifest = Manifest.load(layout.manifest)
        return (
            Interpreter.current().matches(manifest.venv)
            and layout.venv_python.exists()
            and declared_job.is_installed(self._steps.declared(), layout, installer, self._env)
        )

    async def _ready(self, installer: Installer) -> StateLayout | None:
        """The published generation for this image when it is finished for these requirements
        and its interpreter answers, else ``None``."""
        loop = asyncio.get_running_loop()
        generation = await loop.run_in_executor(
            None, generations.current, self.root, self._image_key
        )
        if generation is None:
            return None
        if generation.local is not None:  # each replica runs its own copy, from local disk
            await local_copy(generation, self.reporter)
        if not await loop.run_in_executor(None, self._finished, generation, installer):
            return None
        if await venv_job.why_unusable(generation, Interpreter.current(), self._env):
            return None
        return generation

    def _use(self, generation: StateLayout) -> None:
        """Record ``generation`` as in use by this replica (and the previous one as not)."""
        previous, self._using = self._using, generation
        generations.register(generation, self._holder)
        if previous is not None and previous.env is not None and previous.env != generation.env:
            generations.unregister(previous, self._holder)

    async def _build(
        self, installer: Installer, force: bool = False
    ) -> tuple[StateLayout, Path | None]:
        """A new generation built beside the current one (call with the build lease held),
        published when its requirements installed."""
        loop = asyncio.get_running_loop()
        generation = await loop.run_in_executor(
            None, generations.create, self.root, self._image_key, self._holder
        )
        python = await self._steps.build(generation, installer, force=force)
        finished = python is not None and self.reporter.status("requirements") != "failed"
        if finished and generation.local is not None:
            finished = await snapshot_for_replicas(generation, self.reporter)
        if finished:
            await loop.run_in_executor(
                None, generations.publish, self.root, self._image_key, generation
            )
            self._failed_build = None
            assert generation.env is not None
            self.reporter.log(
                None, "orchestrator", f"Published the environment {generation.env.name}"
            )
        else:
            self._failed_build = await loop.run_in_executor(None, self._digest)
        return generation, python

    async def build(self, installer: Installer, force: bool) -> tuple[StateLayout, Path | None]:
        """A new generation (see :meth:`_build`), waiting for the build lease as long as another
        replica holds it."""
        lease = await wait_for(self._lease(self.root.build_lease), poll=0.5)
        async with holding(lease, self.reporter):
            return await self._build(installer, force)

    async def watch(
        self, installer: Installer, venv_lock: asyncio.Lock, interval: float = 2.0
    ) -> None:
        """Keep this replica's use record fresh; build a new generation when the requirements
        changed (one replica, under the build lease); move marimo to a newly published
        generation (one replica at a time)."""
        loop = asyncio.get_running_loop()
        refreshed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - refreshed > self.settings.lease_seconds / 2 and self._using:
                await loop.run_in_executor(None, generations.register, self._using, self._holder)
                refreshed = time.monotonic()
            # Cheap first: the full checks (fingerprint, interpreter probe) only run when the
            # published pointer or the requirements changed since things last settled.
            seen = (
                await loop.run_in_executor(None, generations.current, self.root, self._image_key),
                await loop.run_in_executor(None, self._digest),
            )
            if seen == self._settled or venv_lock.locked():
                continue
            async with venv_lock:
                if await self._follow(installer):
                    self._settled = seen

    async def _follow(self, installer: Installer) -> bool:
        """One step towards serving the current generation; True when nothing is left to do
        until the pointer or the requirements change."""
        generation = await self._ready(installer)
        if generation is not None:
            if self._using is None or generation.env != self._using.env:
                await self.move_to(generation)
            return True
        wanted = await asyncio.get_running_loop().run_in_executor(None, self._digest)
        if self._failed_build is not None and wanted == self._failed_build:
            return True  # this replica's build of these requirements failed: wait for a change
        lease = await take(self._lease(self.root.build_lease))
        if lease is None:
            return False  # another replica builds it; it is followed once published
        async with holding(lease, self.reporter):
            if await self._ready(installer) is not None:
                return False
            self.reporter.log(
                "requirements",
                "orchestrator",
                "The declared dependencies changed: building a new environment "
                "beside the one marimo runs from",
            )
            await self._build(installer)
        return False

    async def move_to(self, generation: StateLayout) -> None:
        """Move marimo to ``generation`` (switched beside the running one when it can be, see
        :meth:`Host.move_marimo`), holding the move lease so that replicas move one at a time
        (the others keep serving); then remove generations nobody uses. The generation left
        stays registered as in use until its marimo is gone."""
        lease = await wait_for(self._lease(self.root.move_lease), poll=0.2)
        async with holding(lease, self.reporter):
            assert generation.env is not None
            name = generation.env.name
            self.reporter.log("marimo", "orchestrator", f"Moving marimo to the environment {name}")
            generations.register(generation, self._holder)
            await self._host.move_marimo(generation)
            self._use(generation)
            deadline = time.monotonic() + self.settings.marimo_ready_timeout + 30
            while self.reporter.status("marimo") in ("pending", "running"):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            self.reporter.log("marimo", "orchestrator", f"Moved marimo to the environment {name}")
            stale_after = 10 * self.settings.lease_seconds
            collected = await asyncio.get_running_loop().run_in_executor(
                None, generations.collect, self.root, stale_after
            )
            collected += await asyncio.get_running_loop().run_in_executor(
                None, prune_local_copies, self.root
            )
            for path in collected:
                self.reporter.log(None, "orchestrator", f"Removed {path}: no replica uses it")

    def leave(self) -> None:
        """This replica no longer uses its generation (it stops)."""
        if self._using is not None and self._using.env is not None:
            generations.unregister(self._using, self._holder)
