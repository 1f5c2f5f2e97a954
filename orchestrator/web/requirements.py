"""``/-/requirements``: the packages a user installed (the ledger's user set), offered for the
requirements file.

``GET`` lists them: ``{"file": "requirements.txt", "packages": [{"name", "version", "line",
"declared_in", "needed_by"}]}``. ``POST {"add": "<name>"}`` appends that package's
``name==version`` (the ledger's version) to the requirements file and answers with what was
added and the list as it is now. The work is jobs/user_requirements.py's; this handler checks
the request and runs it off the event loop.

Invariants: same origin and JSON only (a cross-site form can send neither); the body is read
strictly (orchestrator/web/json_body.py); ``add`` must be a package name, never a requirement
line: a version, a URL or an option in it is a 400 naming the field, so nothing the client
writes reaches the file but the choice of a package of the ledger's user set.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.actions import Actions
from orchestrator.trust.auth import Guard
from orchestrator.trust.origins import same_origin
from orchestrator.web.json_body import BadInput, Field, answer_bad_input, json_request
from orchestrator.web.protected import Protected

if TYPE_CHECKING:
    from jobs.runner import Pipeline

log = logging.getLogger("orchestrator")

FIELDS = {"add": Field(str, required=True)}
SHAPE = '{"add": "<package name>"}'
NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?")
"""A distribution name (PEP 508), at most 200 characters."""


class RequirementsHandler(Protected):
    """GET lists the user's packages; POST adds one to the requirements file."""

    def initialize(self, actions: Actions, *, guard: Guard, **_: Any) -> None:
        self.actions = actions
        self.guard = guard

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def _fail(self, status: int, message: str, field: str | None = None) -> None:
        self.set_status(status)
        self.finish({"error": message, **({"field": field} if field else {})})

    def _pipeline(self) -> Pipeline | None:
        """The pipeline once the environment is known, else None (the answer is sent)."""
        if not same_origin(self, self.guard.trust_proxy):
            self._fail(403, f"cross-site requests to {self.request.path} are refused")
            return None
        pipeline = self.actions.pipeline
        if pipeline is None or pipeline.layout is None:
            self._fail(409, "the environment is still being prepared; try again in a moment")
            return None
        return pipeline

    async def get(self) -> None:
        pipeline = self._pipeline()
        if pipeline is None:
            return
        from jobs import user_requirements

        layout = pipeline.layout
        assert layout is not None

        def listing() -> dict[str, Any]:
            declared = pipeline.declared()
            return {
                "file": declared.label(declared.requirements_file),
                "packages": [o.as_json() for o in user_requirements.offers(layout, declared)],
            }

        self.finish(await asyncio.get_running_loop().run_in_executor(None, listing))

    async def post(self) -> None:
        pipeline = self._pipeline()
        if pipeline is None:
            return
        payload = json_request(self, FIELDS, SHAPE)
        if payload is None:
            return
        if not NAME.fullmatch(payload["add"]):
            message = (
                "'add' must be a package name such as emoji (no version: the installed one is "
                f"written); expected {SHAPE}"
            )
            answer_bad_input(self, BadInput(message, "add"))
            return
        from jobs import user_requirements

        layout = pipeline.layout
        assert layout is not None

        def adding() -> dict[str, Any]:
            added = user_requirements.add(layout, pipeline.declared, payload["add"])
            declared = pipeline.declared()
            file = declared.label(declared.requirements_file)
            log.info("%s added to %s (from the Environment panel)", added.line, file)
            return {
                "added": added.line,
                "file": file,
                "packages": [o.as_json() for o in user_requirements.offers(layout, declared)],
            }

        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, adding)
        except (user_requirements.NotOffered, user_requirements.AlreadyDeclared) as refused:
            self._fail(refused.status, str(refused.args[0]), "add")
            return
        except OSError as error:
            self._fail(500, f"the requirements file could not be written: {error.strerror}")
            return
        self.finish(answer)


class PackagesHandler(RequirementsHandler):
    """``GET /-/packages``: the installed packages, split into those a file declares and those
    the user added (jobs/installed_packages.py has the shape).

    Bounded: requests that arrive while a listing is computed share it, so however many ask,
    at most one listing per pipeline runs at a time off the event loop (kept by pipeline: an
    application never shares another's listing, nor waits on another event loop's)."""

    _running: ClassVar[weakref.WeakKeyDictionary[Pipeline, asyncio.Future[dict[str, Any]]]] = (
        weakref.WeakKeyDictionary()
    )

    async def get(self) -> None:
        pipeline = self._pipeline()
        if pipeline is None:
            return
        running = self._running.get(pipeline)
        if running is None or running.done():
            from jobs import installed_packages

            layout = pipeline.layout
            assert layout is not None

            def listing() -> dict[str, Any]:
                return installed_packages.listing(layout, pipeline.declared())

            running = asyncio.ensure_future(
                asyncio.get_running_loop().run_in_executor(None, listing)
            )
            self._running[pipeline] = running
        try:
            answer = await asyncio.shield(running)
        except OSError as error:
            self._fail(500, f"the installed packages could not be read: {error.strerror}")
            return
        self.finish(answer)

    async def post(self) -> None:
        self._fail(405, "/-/packages only lists; add a package with POST /-/requirements")
