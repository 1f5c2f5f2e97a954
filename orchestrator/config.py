"""One resolved, immutable configuration. Quix's variables are mapped here and nowhere else.

Precedence for every setting: command-line flag, then its ``ORCHESTRATOR_*`` environment twin,
then a Quix variable where one applies, then the default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple, cast

from jobs.settings import InstallerChoice, JobSettings, MarimoMode
from orchestrator.auth_modes import AuthMode
from orchestrator.quix import QuixSettings

INSTALLERS: tuple[InstallerChoice, ...] = ("auto", "uv", "pip")
MODES: tuple[MarimoMode, ...] = ("edit", "run")
LOG_LEVELS = ("debug", "info", "warning", "error")
AUTH_MODES: tuple[AuthMode, ...] = ("quix", "token", "none")
QUIX_STATE_PATH = "Quix__Deployment__State__Path"
QUIX_STATE_ENABLED = "Quix__Deployment__State__Enabled"


class ConfigError(Exception):
    """A setting is wrong; the message names the setting and the value, in one line."""


class Config(NamedTuple):
    """Immutable; ``token`` and ``env`` are never shown in its repr."""

    notebook_dir: Path
    host: str
    port: int
    state_dir: Path
    state_from_quix: bool
    wait_for_state: bool
    state_timeout: float
    requirements: Path
    installer: InstallerChoice
    marimo_mode: MarimoMode
    marimo_ready_timeout: float
    marimo_crash_window: float
    lease_seconds: float
    log_level: Literal["debug", "info", "warning", "error"]
    sse_keepalive: float
    quix: QuixSettings | None
    auth: AuthMode
    token: str | None
    token_generated: bool
    frame_ancestors: str
    metrics_public: bool
    log_format: Literal["text", "json"]
    sync_to_quix: bool
    sync_debounce: float
    env: Mapping[str, str]

    def __repr__(self) -> str:
        return (
            "Config("
            + ", ".join(
                f"{name}={getattr(self, name)!r}"
                for name in self._fields
                if name not in ("token", "env")
            )
            + ")"
        )

    def job_settings(self) -> JobSettings:
        return JobSettings(
            notebook_dir=self.notebook_dir,
            requirements=self.requirements,
            state_dir=self.state_dir,
            wait_for_state=self.wait_for_state,
            state_timeout=self.state_timeout,
            installer=self.installer,
            marimo_mode=self.marimo_mode,
            marimo_ready_timeout=self.marimo_ready_timeout,
            marimo_crash_window=self.marimo_crash_window,
            base_python=sys.executable,
            env=self.env,
            lease_seconds=self.lease_seconds,
        )


def _positive(name: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


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


def _restart_call(value: str | None) -> str | None:
    if value is None:
        return None
    method, _, path = value.strip().partition(" ")
    if method.upper() not in ("GET", "POST", "PUT", "PATCH") or not path.strip():
        raise ConfigError(
            "--quix-restart-call must look like 'POST workspaces/{workspace_id}/...'; "
            f"got {value!r}"
        )
    return f"{method.upper()} {path.strip()}"


def _sync_wanted(flag: bool | None, quix: QuixSettings | None) -> bool:
    """On by default inside Quix (where the notebook's source of truth is), off elsewhere."""
    if flag is None:
        return bool(quix and quix.application_id)
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
    marimo_mode: str,
    marimo_ready_timeout: float,
    log_level: str,
    marimo_crash_window: float = 30.0,
    lease_seconds: float = 30.0,
    sse_keepalive: float,
    quix_restart_call: str | None = None,
    auth: str | None = None,
    token: str | None = None,
    frame_ancestors: str | None = None,
    metrics_public: bool = False,
    log_format: str = "text",
    sync_to_quix: bool | None = None,
    sync_debounce: float = 5.0,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate the already-merged values (flag or env twin or default) into a Config."""
    env = dict(os.environ if env is None else env)
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
    quix = QuixSettings.from_env(env, _restart_call(quix_restart_call))
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
        notebook_dir=notebooks,
        host=host,
        port=port,
        state_dir=state,
        state_from_quix=from_quix,
        wait_for_state=wait_for_state,
        state_timeout=_positive("--state-timeout", state_timeout),
        requirements=reqs,
        installer=cast(InstallerChoice, _choice("--installer", installer, INSTALLERS)),
        marimo_mode=cast(MarimoMode, _choice("--marimo-mode", marimo_mode, MODES)),
        marimo_ready_timeout=_positive("--marimo-ready-timeout", marimo_ready_timeout),
        marimo_crash_window=_positive("--marimo-crash-window", marimo_crash_window),
        lease_seconds=_positive("--lease-seconds", lease_seconds),
        log_level=cast(
            Literal["debug", "info", "warning", "error"],
            _choice("--log-level", log_level, LOG_LEVELS),
        ),
        sse_keepalive=_positive("--sse-keepalive", sse_keepalive),
        quix=quix,
        auth=mode,
        token=token if mode == "token" else None,
        token_generated=generated,
        frame_ancestors=frame_ancestors or ("*" if mode == "quix" else "'self'"),
        metrics_public=metrics_public,
        sync_to_quix=_sync_wanted(sync_to_quix, quix),
        sync_debounce=_positive("--sync-debounce", sync_debounce),
        log_format=cast(
            Literal["text", "json"], _choice("--log-format", log_format, ("text", "json"))
        ),
        env=env,
    )
