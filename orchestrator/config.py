"""One resolved, immutable configuration. Quix's variables are mapped here and nowhere else.

Precedence for every setting: command-line flag, then its ``ORCHESTRATOR_*`` environment twin,
then a Quix variable where one applies, then the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from jobs.env_location import default_env_dir
from jobs.settings import JobSettings, Liveness, RunAs, Switching, repr_without
from orchestrator.options import OPTIONS, LogFormat, LogLevel
from orchestrator.quix.settings import DELETE_METHODS, RESTART_METHODS, PortalCall, QuixSettings
from orchestrator.trust.auth_modes import AuthMode
from orchestrator.trust.hosts import parse_allowed

QUIX_STATE_PATH = "Quix__Deployment__State__Path"
QUIX_STATE_ENABLED = "Quix__Deployment__State__Enabled"
QUIX_PORTAL_ORIGINS = "https://portal.cloud.quix.io"
"""The Quix Cloud portal's page origin (not its API's), the default for --portal-origins."""


class ConfigError(Exception):
    """A setting is wrong; the message names the setting and the value, in one line."""


class Config(NamedTuple):
    """Immutable; ``token`` is never shown in its repr (nor ``jobs.env`` in ``jobs``')."""

    jobs: JobSettings
    """What the startup jobs read: the folders, the installer, marimo's mode, timeouts and user."""
    host: str
    port: int
    log_level: LogLevel
    sse_keepalive: float
    quix: QuixSettings | None
    auth: AuthMode
    token: str | None
    token_generated: bool
    frame_ancestors: str
    metrics_public: bool
    environment_panel: bool
    open_notebook: str | None
    log_format: LogFormat
    sync_to_quix: bool
    sync_debounce: float
    allowed_hosts: tuple[str, ...]
    trust_proxy: bool
    quix_recheck: float
    portal_origins: tuple[str, ...]
    quix_grace: float

    def __repr__(self) -> str:
        return repr_without(self, "token")


ORCHESTRATOR_ONLY = ("ORCHESTRATOR_",)
"""Variables marimo (and so every notebook cell and terminal) never sees: the orchestrator's
own settings, ``ORCHESTRATOR_TOKEN`` among them."""


def notebook_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The orchestrator's environment without its own secrets and settings, for marimo.

    Quix's variables stay (``Quix__Sdk__Token`` is the workspace's service credential, given to
    the deployment for its code, notebooks included; the other ``Quix__*`` describe it).
    """
    return {key: value for key, value in env.items() if not key.startswith(ORCHESTRATOR_ONLY)}


def _origins(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    origins = tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise ConfigError(
                f"--portal-origins: {origin!r} is not an origin like https://portal.example"
            )
    return origins


_CAPABILITIES = {"CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7}


def _marimo_user(value: str | None) -> RunAs | None:
    """marimo's own user: a name or uid, with our group; None when it is ourselves."""
    if not value:
        return None
    import pwd

    try:
        entry = pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
        uid, home = entry.pw_uid, entry.pw_dir
    except KeyError:
        if not value.isdigit():
            raise ConfigError(f"--marimo-user {value!r}: no such user") from None
        uid, home = int(value), "/tmp"
    if uid == os.getuid():
        return None
    if uid == 0:
        raise ConfigError("--marimo-user must not be root")
    try:
        status = Path("/proc/self/status").read_text()
        effective = int(
            next(line for line in status.splitlines() if line.startswith("CapEff:"))[7:], 16
        )
    except (OSError, StopIteration, ValueError):
        effective = 0
    missing = [name for name, bit in _CAPABILITIES.items() if not effective >> bit & 1]
    if missing:
        raise ConfigError(
            f"--marimo-user {value}: starting marimo as another user needs {', '.join(missing)} "
            "(the image's entry point grants them when the container starts as root)"
        )
    return RunAs(uid, os.getgid(), home)


def _notebook_inside(name: str, value: str | None) -> str | None:
    """A path relative to NOTEBOOK_DIR that stays inside it (it may not exist yet)."""
    if not value:
        return None
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{name} {value!r} must be a path inside NOTEBOOK_DIR, relative to it")
    return path.as_posix()


def _state_parent_usable(path: Path) -> None:
    """The state path may appear later (a volume mounting late), but it must be possible."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return
        probe = probe.parent
    if probe != path and not probe.is_dir():
        raise ConfigError(
            f"--state-dir {path}: cannot be created because {probe} is not a directory"
        )
    if probe == path and not path.is_dir():
        raise ConfigError(f"--state-dir {path}: exists and is not a directory")


def _portal_call(value: str | None, flag: str, methods: tuple[str, ...]) -> PortalCall | None:
    if value is None:
        return None
    try:
        return PortalCall.parse(value, methods)
    except ValueError as error:
        raise ConfigError(f"{flag} {error}; got {value!r}") from None


def _not_persistent(env: Mapping[str, str], quix: QuixSettings | None, state: Path) -> str | None:
    """Inside Quix only the volume Quix mounts (``Quix__Deployment__State__Path``) survives a
    restart, whatever folder the image has; ``None`` when the state persists (or outside Quix)."""
    if quix is None:
        return None
    mounted = env.get(QUIX_STATE_PATH)
    if mounted:
        volume = Path(mounted).expanduser().absolute()
        if state == volume or volume in state.parents:
            return None
        reason = f"The state folder {state} is not on the volume Quix mounts at {volume}"
    else:
        reason = "State is not enabled for this Quix deployment"
    return (
        f"{reason}: installed packages, marimo's settings and sign-ins are lost at every "
        "restart, and notebook edits not yet saved to Quix have nowhere durable to wait. "
        "Enable State in the deployment's settings in Quix (mount path /app/state) to keep them"
    )


def _sync_wanted(flag: bool | None, quix: QuixSettings | None, mode: str = "edit") -> bool:
    """On by default inside Quix (where the notebook's source of truth is), off elsewhere;
    only in edit mode (in run mode nobody edits)."""
    if flag and mode != "edit":
        raise ConfigError("--sync-to-quix needs --marimo-mode edit (nobody edits in run mode)")
    if flag is None:
        return bool(quix and quix.application_id) and mode == "edit"
    if flag and not (quix and quix.application_id):
        raise ConfigError(
            "--sync-to-quix needs Quix__Portal__Api, Quix__Workspace__Id and "
            "Quix__Application__Id in the environment"
        )
    return flag


class _Values:
    """The options' merged values, checked by their own ``Option.accept``; remembers which were
    read so that :func:`resolve` can refuse an option nobody uses (a programming error)."""

    def __init__(self, merged: Mapping[str, Any]) -> None:
        unknown = set(merged) - {option.key for option in OPTIONS}
        if unknown:
            raise TypeError(f"not options: {', '.join(sorted(unknown))}")
        self._values: dict[str, Any] = {}
        for option in OPTIONS:
            try:
                self._values[option.key] = option.accept(merged[option.key])
            except KeyError:
                raise TypeError(f"option {option.key} has no value") from None
            except ValueError as error:
                raise ConfigError(f"{option.name} {error}") from None
        self._read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self._read.add(key)
        return self._values[key]

    def copied(self, into: str) -> dict[str, Any]:
        """The options that land as they are in ``into`` (``config`` or ``jobs``)."""
        keys = [option.key for option in OPTIONS if option.into == into]
        return {key: self[key] for key in keys}

    def unread(self) -> list[str]:
        return [key for key in self._values if key not in self._read]


def resolve(merged: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    """Validate the already-merged values (flag or env twin or default, one per option of
    orchestrator/options.py, keyed by its ``key``) into a Config.

    Each option is checked by its own declaration (choices, ``check``) and either copied where
    its ``into`` says or derived from here, together with Quix's variables; defaults are
    declared there, once, and nowhere here."""
    values = _Values(merged)
    env = dict(env)
    notebooks = Path(values["notebook_dir"]).expanduser().resolve()
    if not notebooks.is_dir():
        what = "does not exist" if not notebooks.exists() else "is not a directory"
        raise ConfigError(f"NOTEBOOK_DIR {notebooks} {what}")
    state_dir: str | None = values["state_dir"]
    quix_state = env.get(QUIX_STATE_PATH) or None
    from_quix = state_dir is None and quix_state is not None
    state = Path(state_dir or quix_state or "./state").expanduser().absolute()
    _state_parent_usable(state)
    wait_for_state: bool | None = values["wait_for_state"]
    if wait_for_state is None:
        # A volume Quix promises must be waited for; creating it ourselves would lose data.
        wait_for_state = from_quix or env.get(QUIX_STATE_ENABLED, "").lower() == "true"
    requirements: str | None = values["requirements"]
    reqs = (
        Path(requirements).expanduser().absolute()
        if requirements
        else notebooks / "requirements.txt"
    )
    if requirements and reqs.is_dir():
        raise ConfigError(f"--requirements {reqs} is a directory, not a file")
    quix = QuixSettings.from_env(
        env,
        _portal_call(values["quix_restart_call"], "--quix-restart-call", RESTART_METHODS),
        _portal_call(values["quix_delete_call"], "--quix-delete-call", DELETE_METHODS),
        values["quix_commit_message_param"] or None,
    )
    mode: AuthMode = values["auth"] or ("quix" if quix else "token")
    if mode == "quix" and quix is None:
        raise ConfigError(
            "--auth quix needs Quix__Portal__Api and Quix__Workspace__Id in the environment"
        )
    token: str | None = values["token"]
    generated = mode == "token" and not token
    if generated:
        # What secrets.token_urlsafe(24) returns, without importing secrets (and hashlib,
        # random, hmac) before marimo is spawned: os.urandom is the same source.
        import base64

        token = base64.urlsafe_b64encode(os.urandom(24)).rstrip(b"=").decode("ascii")
    if mode == "token" and token is not None and len(token) < 12:
        raise ConfigError("--token must be at least 12 characters long")
    env_dir: str | None = values["env_dir"]
    trust_proxy: bool | None = values["trust_proxy"]
    config = Config(
        jobs=JobSettings(
            **values.copied("jobs"),
            notebook_dir=notebooks,
            requirements=reqs,
            state_dir=state,
            env_dir=(Path(env_dir).expanduser().absolute() if env_dir else default_env_dir(state)),
            wait_for_state=wait_for_state,
            marimo_liveness=Liveness(
                interval=values["marimo_probe_interval"],
                timeout=values["marimo_probe_timeout"],
                misses=values["marimo_probe_misses"],
            ),
            marimo_switch=Switching(
                drain=values["marimo_switch_drain"],
                margin=values["marimo_switch_margin"] * 1024 * 1024,
            ),
            env=notebook_environment(env),
            not_persistent=_not_persistent(env, quix, state),
            marimo_user=_marimo_user(values["marimo_user"]),
        ),
        **values.copied("config"),
        quix=quix,
        auth=mode,
        token=token if mode == "token" else None,
        token_generated=generated,
        frame_ancestors=values["frame_ancestors"] or ("*" if mode == "quix" else "'self'"),
        open_notebook=_notebook_inside("--open", values["open_notebook"]),
        sync_to_quix=_sync_wanted(values["sync_to_quix"], quix, values["marimo_mode"]),
        allowed_hosts=parse_allowed(values["allowed_hosts"]),
        # Inside Quix the ingress in front is the only way in: trust what it forwards.
        trust_proxy=quix is not None if trust_proxy is None else trust_proxy,
        portal_origins=_origins(
            values["portal_origins"], (QUIX_PORTAL_ORIGINS,) if mode == "quix" else ()
        ),
    )
    unread = values.unread()
    if unread:
        raise TypeError(f"options read nowhere: {', '.join(unread)}")
    return config
