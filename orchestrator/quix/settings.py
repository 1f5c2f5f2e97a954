"""What the orchestrator reads of Quix's injected ``Quix__*`` variables (see reference/quix.md).

Kept apart from :mod:`orchestrator.quix.portal` (the portal client) as the configuration is read
before marimo's early spawn: this module imports the standard library's ``typing`` and
``urllib.parse`` and :mod:`jobs.settings` (itself standard library only), and no ``asyncio``.

Invariant: the SDK token never appears in a repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from jobs.settings import repr_without

PORTAL_API = "Quix__Portal__Api"
WORKSPACE_ID = "Quix__Workspace__Id"
DEPLOYMENT_ID = "Quix__Deployment__Id"
APPLICATION_ID = "Quix__Application__Id"
SDK_TOKEN = "Quix__Sdk__Token"


class PortalCall(NamedTuple):
    """A configurable portal call (``--quix-restart-call``, ``--quix-delete-call``), parsed once
    from its ``METHOD path`` form: ``template`` is formatted with the deployment's identifiers
    (``{workspace_id}``, ``{deployment_id}``, ``{application_id}``, ``{path}``)."""

    method: str
    template: str

    @classmethod
    def parse(cls, text: str, methods: tuple[str, ...]) -> PortalCall:
        """``text`` as ``METHOD path``; ``ValueError`` (saying the form) when it is not one, or
        the method is not among ``methods``."""
        method, _, template = text.strip().partition(" ")
        if method.upper() not in methods or not template.strip():
            raise ValueError(f"must look like '{methods[0]} workspaces/{{workspace_id}}/...'")
        return cls(method.upper(), template.strip())

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


RESTART_METHODS = ("GET", "POST", "PUT", "PATCH")
DELETE_METHODS = ("DELETE", "POST", "PUT")
DEFAULT_RESTART_CALL = PortalCall("POST", "workspaces/{workspace_id}/deployments/update")


def normalise_portal_url(raw: str) -> str:
    """No trailing slash; plain http only for a portal on this machine (tests)."""
    parts = urlsplit(raw.strip())
    scheme = parts.scheme or "https"
    host = parts.hostname or ""
    if scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        scheme = "https"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class QuixSettings(NamedTuple):
    """Immutable; the SDK token is never shown in its repr."""

    portal_api: str
    workspace_id: str
    deployment_id: str | None
    application_id: str | None
    sdk_token: str | None
    restart_call: PortalCall = DEFAULT_RESTART_CALL
    timeout: float = 5.0
    """Per attempt: connecting and reading each (Quix's own client uses 5 s)."""
    delete_call: PortalCall | None = None
    """The call deleting one application file ({workspace_id}, {application_id}, {path});
    the reference documents none, so deletions are not propagated unless this is set."""
    commit_message_param: str | None = None
    """Query parameter carrying ``[AutoCommit] Updated <path>`` with a file push; the reference
    does not say whether the call takes a message, so none is sent unless this is set."""
    deadline: float = 12.0
    """For a whole call, retries and the wait for a free portal thread included."""

    def __repr__(self) -> str:
        return repr_without(self, "sdk_token")

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        restart_call: PortalCall | None = None,
        delete_call: PortalCall | None = None,
        commit_message_param: str | None = None,
    ) -> QuixSettings | None:
        portal = env.get(PORTAL_API)
        workspace = env.get(WORKSPACE_ID)
        if not portal or not workspace:
            return None
        return cls(
            portal_api=normalise_portal_url(portal),
            workspace_id=workspace,
            deployment_id=env.get(DEPLOYMENT_ID) or None,
            application_id=env.get(APPLICATION_ID) or None,
            sdk_token=env.get(SDK_TOKEN) or None,
            restart_call=restart_call or DEFAULT_RESTART_CALL,
            delete_call=delete_call,
            commit_message_param=commit_message_param,
        )
