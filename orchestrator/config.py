"""One resolved, immutable configuration. Quix's variables are mapped here and nowhere else.

Precedence for every setting: command-line flag, then its ``ORCHESTRATOR_*`` environment twin,
then a Quix variable where one applies, then the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple, cast

from jobs.env_location import ENV_LOCATIONS, EnvLocation, default_env_dir
from jobs.settings import (
    InstallerChoice,
    JobSettings,
    Liveness,
    MarimoMode,
    RunAs,
    Switching,
    repr_without,
)
from orchestrator.auth_modes import AuthMode
from orchestrator.hosts import parse_allowed
from orchestrator.quix_settings import DELETE_METHODS, RESTART_METHODS, PortalCall, QuixSettings

INSTALLERS: tuple[InstallerChoice, ...] = ("auto", "uv", "pip")
MODES: tuple[MarimoMode, ...] = ("edit", "run")
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
AUTH_MODES: tuple[AuthMode, ...] = ("quix", "token", "none")
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


def _positive(name: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _not_negative(name: str, value: int) -> int:
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {value}")
    return value


def _notebook_inside(name: str, value: str | None) -> str | None:
    """A path relative to NOTEBOOK_DIR that stays inside it (it may not exist yet)."""
    if not value:
        return None
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{name} {value!r} must be a path inside NOTEBOOK_DIR, relative to it")
    return path.as_posix()


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


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


def resolve(
    *,
    notebook_dir: str,
    host: str,
    port: int,
    state_dir: str | None,
    wait_for_state: bool | None,
    state_timeout: float,
    requirements: str | None,
    installer: str,
    record_installs: bool,
    env_location: str,
    env_dir: str | None,
    marimo_mode: str,
    marimo_ready_timeout: float,
    lease_seconds: float,
    marimo_crash_window: float,
    marimo_probe_interval: float,
    marimo_probe_timeout: float,
    marimo_probe_misses: int,
    marimo_switch_drain: float,
    marimo_switch_margin: int,
    auth: str | None,
    token: str | None,
    frame_ancestors: str | None,
    allowed_hosts: str | None,
    trust_proxy: bool | None,
    quix_recheck: float,
    quix_grace: float,
    portal_origins: str | None,
    marimo_user: str | None,
    quix_restart_call: str | None,
    quix_commit_message_param: str | None,
    quix_delete_call: str | None,
    sync_to_quix: bool | None,
    sync_debounce: float,
    metrics_public: bool,
    open_notebook: str | None,
    environment_panel: bool,
    log_format: str,
    log_level: str,
    sse_keepalive: float,
    env: Mapping[str, str],
) -> Config:
    """Validate the already-merged values (flag or env twin or default) into a Config.

    One keyword per option of orchestrator/options.py (its ``key``), with no defaults of its
    own: those are declared there, once."""
    env = dict(env)
    notebooks = Path(notebook_dir).expanduser().resolve()
    if not notebooks.is_dir():
        what = "does not exist" if not notebooks.exists() else "is not a directory"
        raise ConfigError(f"NOTEBOOK_DIR {notebooks} {what}")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    quix_state = env.get(QUIX_STATE_PATH) or None
    from_quix = state_dir is None and quix_state is not None
    state = Path(state_dir or quix_state or "./state").expanduser().absolute()
    _state_parent_usable(state)
    if wait_for_state is None:
        # A volume Quix promises must be waited for; creating it ourselves would lose data.
        wait_for_state = from_quix or env.get(QUIX_STATE_ENABLED, "").lower() == "true"
    reqs = (
        Path(requirements).expanduser().absolute()
        if requirements
        else notebooks / "requirements.txt"
    )
    if requirements and reqs.is_dir():
        raise ConfigError(f"--requirements {reqs} is a directory, not a file")
    quix = QuixSettings.from_env(
        env,
        _portal_call(quix_restart_call, "--quix-restart-call", RESTART_METHODS),
        _portal_call(quix_delete_call, "--quix-delete-call", DELETE_METHODS),
        quix_commit_message_param or None,
    )
    mode = cast(AuthMode, _choice("--auth", auth or ("quix" if quix else "token"), AUTH_MODES))
    if mode == "quix" and quix is None:
        raise ConfigError(
            "--auth quix needs Quix__Portal__Api and Quix__Workspace__Id in the environment"
        )
    generated = mode == "token" and not token
    if generated:
        # What secrets.token_urlsafe(24) returns, without importing secrets (and hashlib,
        # random, hmac) before marimo is spawned: os.urandom is the same source.
        import base64

        token = base64.urlsafe_b64encode(os.urandom(24)).rstrip(b"=").decode("ascii")
    if mode == "token" and token is not None and len(token) < 12:
        raise ConfigError("--token must be at least 12 characters long")
    return Config(
        jobs=JobSettings(
            notebook_dir=notebooks,
            requirements=reqs,
            state_dir=state,
            env_location=cast(EnvLocation, _choice("--env-location", env_location, ENV_LOCATIONS)),
            env_dir=(Path(env_dir).expanduser().absolute() if env_dir else default_env_dir(state)),
            wait_for_state=wait_for_state,
            state_timeout=_positive("--state-timeout", state_timeout),
            installer=cast(InstallerChoice, _choice("--installer", installer, INSTALLERS)),
            record_installs=record_installs,
            marimo_mode=cast(MarimoMode, _choice("--marimo-mode", marimo_mode, MODES)),
            marimo_ready_timeout=_positive("--marimo-ready-timeout", marimo_ready_timeout),
            marimo_crash_window=_positive("--marimo-crash-window", marimo_crash_window),
            marimo_liveness=Liveness(
                interval=_positive("--marimo-probe-interval", marimo_probe_interval),
                timeout=_positive("--marimo-probe-timeout", marimo_probe_timeout),
                misses=_not_negative("--marimo-probe-misses", marimo_probe_misses),
            ),
            marimo_switch=Switching(
                drain=_positive("--marimo-switch-drain", marimo_switch_drain),
                margin=_not_negative("--marimo-switch-margin", marimo_switch_margin) * 1024 * 1024,
            ),
            env=notebook_environment(env),
            not_persistent=_not_persistent(env, quix, state),
            marimo_user=_marimo_user(marimo_user),
            lease_seconds=_positive("--lease-seconds", lease_seconds),
        ),
        host=host,
        port=port,
        log_level=cast(LogLevel, _choice("--log-level", log_level, LOG_LEVELS)),
        sse_keepalive=_positive("--sse-keepalive", sse_keepalive),
        quix=quix,
        auth=mode,
        token=token if mode == "token" else None,
        token_generated=generated,
        frame_ancestors=frame_ancestors or ("*" if mode == "quix" else "'self'"),
        metrics_public=metrics_public,
        environment_panel=environment_panel,
        open_notebook=_notebook_inside("--open", open_notebook),
        sync_to_quix=_sync_wanted(sync_to_quix, quix, marimo_mode),
        sync_debounce=_positive("--sync-debounce", sync_debounce),
        log_format=cast(LogFormat, _choice("--log-format", log_format, LOG_FORMATS)),
        allowed_hosts=parse_allowed(allowed_hosts),
        # Inside Quix the ingress in front is the only way in: trust what it forwards.
        trust_proxy=quix is not None if trust_proxy is None else trust_proxy,
        quix_recheck=_positive("--quix-recheck", quix_recheck),
        portal_origins=_origins(portal_origins, (QUIX_PORTAL_ORIGINS,) if mode == "quix" else ()),
        quix_grace=_positive("--quix-grace", quix_grace),
    )
