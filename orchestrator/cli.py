"""Command line: ``marimo-orchestrator [NOTEBOOK_DIR]``; every flag has an ORCHESTRATOR_* twin.

Only the standard library is imported here, so ``--help`` and configuration errors are instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator.config import (
    AUTH_MODES,
    INSTALLERS,
    LOG_LEVELS,
    MODES,
    Config,
    ConfigError,
    resolve,
)

ENV_PREFIX = "ORCHESTRATOR_"


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own formatter, sized from the terminal without ``shutil``.

    argparse builds a formatter for every ``add_argument`` (to check metavars) and sizes it with
    ``shutil.get_terminal_size``; importing ``shutil`` (and the compression modules it imports)
    is a few milliseconds on the warm start's critical path, before marimo is spawned.
    """

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "")) or 0
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 80
        super().__init__(prog, width=columns - 2)


class _Options:
    """Adds flags whose default comes from the environment twin, converted with a clear error."""

    def __init__(self, parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
        self.parser = parser
        self.env = env
        self.errors: list[str] = []

    def add(
        self,
        flag: str,
        *,
        default: Any,
        convert: Callable[[str], Any] = str,
        help: str,
        **kwargs: Any,
    ) -> None:
        name = _env_name(flag)
        raw = self.env.get(name)
        value = default
        if raw is not None and raw != "":
            try:
                value = convert(raw)
            except ValueError as error:
                self.errors.append(f"environment variable {name}={raw!r} is invalid: {error}")
        shown = "" if default is None else f" (default: {default})"
        self.parser.add_argument(
            flag, default=value, type=convert, help=f"{help}{shown} [env: {name}]", **kwargs
        )


def build_parser(env: Mapping[str, str]) -> tuple[argparse.ArgumentParser, list[str]]:
    parser = argparse.ArgumentParser(
        prog="marimo-orchestrator",
        formatter_class=_HelpFormatter,
        description=(
            "Serve a marimo notebook folder from a container: the port answers at once with a "
            "live loading page while a persistent venv is prepared and requirements are "
            "installed in the background; then every request is proxied to marimo. "
            "Own routes live under /-/ (healthy, ready, status, events)."
        ),
    )
    parser.add_argument(
        "notebook_dir",
        nargs="?",
        default=env.get(ENV_PREFIX + "NOTEBOOK_DIR") or ".",
        metavar="NOTEBOOK_DIR",
        help="folder of notebooks marimo serves (default: current folder) "
        "[env: ORCHESTRATOR_NOTEBOOK_DIR]",
    )
    options = _Options(parser, env)
    options.add("--host", default="0.0.0.0", help="address to listen on")
    options.add("--port", default=8080, convert=int, help="public port")
    options.add(
        "--state-dir",
        default=None,
        help="persistent state folder holding the venv, caches and settings "
        "(default: $Quix__Deployment__State__Path when set, else ./state)",
    )
    options.add(
        "--wait-for-state",
        default=None,
        convert=_boolean,
        help="wait for the state folder to appear instead of creating it "
        "(default: true when the folder comes from Quix)",
    )
    options.add(
        "--state-timeout",
        default=300.0,
        convert=float,
        help="seconds to wait for a usable state folder before falling back to a temporary one",
    )
    options.add(
        "--requirements",
        default=None,
        help="requirements file to install (default: NOTEBOOK_DIR/requirements.txt; "
        "a missing file means nothing to install)",
    )
    options.add(
        "--installer",
        default="auto",
        choices=INSTALLERS,
        help="installer for requirements and marimo's Install button; auto = uv when available",
    )
    options.add(
        "--marimo-mode",
        default="edit",
        choices=MODES,
        help="edit: the notebook editor; run: notebooks as read-only apps",
    )
    options.add(
        "--marimo-ready-timeout",
        default=300.0,
        convert=float,
        help="seconds marimo may take to answer /health after it starts",
    )
    options.add(
        "--marimo-crash-window",
        default=30.0,
        convert=float,
        help="marimo exiting within this many seconds of its start counts towards a crash "
        "loop (5 in a row stop the restarts)",
    )
    options.add(
        "--lease-seconds",
        default=30.0,
        convert=float,
        help="run mode on a shared state folder: a replica building the environment that "
        "sent no heartbeat for this long is taken over by another",
    )
    options.add("--log-level", default="info", choices=LOG_LEVELS, help="log verbosity")
    options.add(
        "--sse-keepalive",
        default=15.0,
        convert=float,
        help="seconds between keep-alive comments on /-/events",
    )
    options.add(
        "--quix-restart-call",
        default=None,
        help="portal call that restarts this deployment, as 'METHOD path' with {workspace_id} "
        "and {deployment_id} (default: POST workspaces/{workspace_id}/deployments/update)",
    )
    options.add(
        "--quix-delete-call",
        default=None,
        help="portal call that deletes one application file, as 'METHOD path' with "
        "{workspace_id}, {application_id} and {path} (default: none, deleted and renamed "
        "notebooks are listed as not propagated)",
    )
    options.add(
        "--quix-commit-message-param",
        default=None,
        help="query parameter that carries '[AutoCommit] Updated <file>' with each notebook "
        "push (default: none; Quix does not document one)",
    )
    options.add(
        "--auth",
        default=None,
        choices=AUTH_MODES,
        help="quix: Quix tokens (portal iframe, PAT form, Bearer); token: one access token; "
        "none: no sign-in at all (default: quix when Quix__Portal__Api is set, else token)",
    )
    options.add(
        "--token",
        default=None,
        help="the access token in token mode (default: generated and printed once at start)",
    )
    options.add(
        "--frame-ancestors",
        default=None,
        help="who may embed the pages in a frame, as CSP frame-ancestors "
        "(default: * in quix mode, 'self' elsewhere)",
    )
    metrics_env = env.get(ENV_PREFIX + "METRICS_PUBLIC")
    metrics_default = False
    if metrics_env:
        try:
            metrics_default = _boolean(metrics_env)
        except ValueError as error:
            options.errors.append(
                f"environment variable {ENV_PREFIX}METRICS_PUBLIC is invalid: {error}"
            )
    parser.add_argument(
        "--metrics-public",
        action=argparse.BooleanOptionalAction,
        default=metrics_default,
        help="serve /-/metrics without sign-in (for a scraper inside the cluster) "
        "(default: off) [env: ORCHESTRATOR_METRICS_PUBLIC]",
    )
    options.add(
        "--open",
        default=None,
        help="the notebook a visit to / opens, relative to NOTEBOOK_DIR (default: the only "
        "notebook there, else main.py when present, else marimo's file list)",
    )
    options.add(
        "--environment-panel",
        default=True,
        convert=_boolean,
        help="add the Environment button, panel and notices to marimo's pages",
    )
    options.add(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="text for people, json for one JSON object per line",
    )
    sync_env = env.get(ENV_PREFIX + "SYNC_TO_QUIX")
    sync_default = None
    if sync_env:
        try:
            sync_default = _boolean(sync_env)
        except ValueError as error:
            options.errors.append(
                f"environment variable {ENV_PREFIX}SYNC_TO_QUIX is invalid: {error}"
            )
    parser.add_argument(
        "--sync-to-quix",
        action=argparse.BooleanOptionalAction,
        default=sync_default,
        help="save notebook edits back to the Quix application's files "
        "(default: on inside Quix, off elsewhere) [env: ORCHESTRATOR_SYNC_TO_QUIX]",
    )
    options.add(
        "--allowed-hosts",
        default=None,
        help="comma-separated Host names served besides loopback names and IP literals "
        "(*.example.com for a domain, * for any); enforced when listening on loopback, or "
        "whenever given (DNS rebinding)",
    )
    trust_env = env.get(ENV_PREFIX + "TRUST_PROXY")
    trust_default = None
    if trust_env:
        try:
            trust_default = _boolean(trust_env)
        except ValueError as error:
            options.errors.append(
                f"environment variable {ENV_PREFIX}TRUST_PROXY is invalid: {error}"
            )
    parser.add_argument(
        "--trust-proxy",
        action=argparse.BooleanOptionalAction,
        default=trust_default,
        help="trust X-Forwarded-For/-Proto/-Host from a proxy in front (client address for "
        "sign-in throttling, https for Secure cookies and origin checks) "
        "(default: on inside Quix, off elsewhere) [env: ORCHESTRATOR_TRUST_PROXY]",
    )
    options.add(
        "--quix-recheck",
        default=300.0,
        convert=float,
        help="seconds after which a Quix session's token is checked with the portal again",
    )
    options.add(
        "--quix-grace",
        default=1800.0,
        convert=float,
        help="seconds a Quix session is kept while the portal cannot be reached to re-check it",
    )
    options.add(
        "--portal-origins",
        default=None,
        help="comma-separated page origins allowed to hand the sign-in page a token "
        "(postMessage AUTH_TOKEN) (default: https://portal.cloud.quix.io in quix mode, "
        "none elsewhere)",
    )
    options.add(
        "--marimo-user",
        default=None,
        help="run marimo, and so notebook code, as this user (name or uid) with the "
        "orchestrator's group, so it cannot read the orchestrator's secrets; needs CAP_SETUID, "
        "CAP_SETGID and CAP_KILL (the image's entry point sets this up when started as root)",
    )
    options.add(
        "--sync-debounce",
        default=5.0,
        convert=float,
        help="seconds without further edits before they are saved to Quix",
    )
    return parser, options.errors


def parse(argv: Sequence[str], env: Mapping[str, str]) -> Config:
    parser, env_errors = build_parser(env)
    args = parser.parse_args(list(argv))
    if env_errors:
        raise ConfigError(env_errors[0])
    return resolve(
        notebook_dir=args.notebook_dir,
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        wait_for_state=args.wait_for_state,
        state_timeout=args.state_timeout,
        requirements=args.requirements,
        installer=args.installer,
        marimo_mode=args.marimo_mode,
        marimo_ready_timeout=args.marimo_ready_timeout,
        marimo_crash_window=args.marimo_crash_window,
        lease_seconds=args.lease_seconds,
        log_level=args.log_level,
        sse_keepalive=args.sse_keepalive,
        quix_restart_call=args.quix_restart_call,
        quix_delete_call=args.quix_delete_call,
        quix_commit_message_param=args.quix_commit_message_param,
        auth=args.auth,
        token=args.token,
        frame_ancestors=args.frame_ancestors,
        metrics_public=args.metrics_public,
        environment_panel=args.environment_panel,
        open_notebook=args.open,
        log_format=args.log_format,
        sync_to_quix=args.sync_to_quix,
        sync_debounce=args.sync_debounce,
        env=env,
        allowed_hosts=args.allowed_hosts,
        trust_proxy=args.trust_proxy,
        quix_recheck=args.quix_recheck,
        portal_origins=args.portal_origins,
        marimo_user=args.marimo_user,
        quix_grace=args.quix_grace,
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["restart"]:
        from orchestrator.restart_cli import main as restart

        return restart(arguments[1:])
    try:
        config = parse(arguments, os.environ)
    except ConfigError as error:
        print(f"marimo-orchestrator: error: {error}", file=sys.stderr)
        return 2
    from orchestrator.server import Server

    return Server(config).run()
