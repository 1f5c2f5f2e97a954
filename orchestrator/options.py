"""Every setting declared once: its name, environment twin, default, meaning and converter.

The command-line parser (orchestrator/cli.py), ``--help``, README's options table and the
container entry point's list of switches are all made from :data:`OPTIONS`;
orchestrator/option_documents.py writes the table and the list (``make readme-options``) and
tests/test_options.py and tests/test_entrypoint_parsing.py fail when either disagrees. An
option's own checks (choices, ``check``) are declared with it; what needs several settings or
Quix's variables is derived in orchestrator/config.py's ``resolve``, which takes the merged values
by ``key``, copies those with an ``into`` as they are and refuses an option it never read.

Only the standard library is imported here (no ``dataclasses``): this is on the start-up path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from jobs.env_location import ENV_LOCATIONS
from jobs.settings import InstallerChoice, MarimoMode
from orchestrator.trust.auth_modes import AuthMode

ENV_PREFIX = "ORCHESTRATOR_"
INSTALLERS: tuple[InstallerChoice, ...] = ("auto", "uv", "pip")
MODES: tuple[MarimoMode, ...] = ("edit", "run")
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
AUTH_MODES: tuple[AuthMode, ...] = ("quix", "token", "none")
Destination = Literal["", "config", "jobs"]


def boolean(text: str) -> bool:
    """``true``/``false`` as the environment spells it (also 1/0, yes/no, on/off)."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be positive, got {value}")
    return value


def not_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def port_number(value: int) -> int:
    if not 0 < value < 65536:
        raise ValueError(f"must be between 1 and 65535, got {value}")
    return value


class Option(NamedTuple):
    """One setting. ``name`` is ``--flag`` or, for the positional argument, its metavar.

    ``help`` and ``default_text`` are written once for both ``--help`` and README: they may hold
    Markdown code spans, whose backticks ``--help`` leaves out. ``default`` is the value when
    neither the flag nor its environment twin is given; ``None`` leaves the choice to
    ``resolve`` and then ``default_text`` says what it picks. A ``switch`` is ``--x/--no-x``
    with a true/false twin.

    Once the flag, its twin and the default are merged, ``choices`` and then ``check`` are
    applied to the value (``check`` may also convert it; it raises ``ValueError`` with a message
    that reads after the flag's name). ``into`` says where the checked value lands as it is:
    the ``Config`` field or the ``JobSettings`` field named ``key``; an empty ``into`` means
    ``orchestrator.config.resolve`` derives something from it (every option is read there or
    copied, never both forgotten: ``resolve`` fails on an option nobody read).
    """

    name: str
    help: str
    default: object = None
    default_text: str | None = None
    convert: Callable[[str], object] = str
    choices: tuple[str, ...] | None = None
    switch: bool = False
    dest: str | None = None
    check: Callable[[Any], Any] | None = None
    into: Destination = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.lstrip("-").replace("-", "_").upper()

    @property
    def key(self) -> str:
        """The keyword ``resolve`` takes this setting as."""
        return self.dest or self.name.lstrip("-").replace("-", "_").lower()

    def accept(self, value: Any) -> Any:
        """The merged value, checked; ``ValueError`` says what is wrong (without the name)."""
        if self.choices is not None and value is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}; got {value!r}")
        return value if self.check is None else self.check(value)

    @property
    def shown_default(self) -> str | None:
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return None
        if isinstance(self.default, bool):
            return "`true`" if self.default else "`false`"
        if isinstance(self.default, float):
            return f"`{self.default:g}`"
        return f"`{self.default}`"


OPTIONS: tuple[Option, ...] = (
    Option(
        "NOTEBOOK_DIR",
        "folder of notebooks marimo serves",
        default=".",
    ),
    Option(
        "--host",
        "address to listen on (auth is on by default)",
        default="0.0.0.0",
        into="config",
    ),
    Option(
        "--port",
        "public port",
        default=8080,
        convert=int,
        check=port_number,
        into="config",
    ),
    Option(
        "--state-dir",
        "persistent state folder: the venv, caches, marimo's settings (see state_layout.md)",
        default_text="`$Quix__Deployment__State__Path` when set, else `./state`",
    ),
    Option(
        "--wait-for-state",
        "wait for the state folder to appear instead of creating it",
        default_text="true when the folder comes from Quix",
        convert=boolean,
    ),
    Option(
        "--state-timeout",
        "seconds to wait for a usable state folder before falling back to a temporary one "
        "(packages then do not persist; status says so)",
        default=300.0,
        convert=float,
        check=positive,
        into="jobs",
    ),
    Option(
        "--requirements",
        "requirements file to install; a missing file means nothing to install; edits while "
        "running are installed in the background",
        default_text="`NOTEBOOK_DIR/requirements.txt`",
    ),
    Option(
        "--installer",
        "installer for the requirements and marimo's Install button: `auto` (uv when "
        "available; uv ships as a dependency), `uv` or `pip`",
        default="auto",
        choices=INSTALLERS,
        into="jobs",
    ),
    Option(
        "--record-installs",
        "edit mode: a package installed with marimo's Install button or Packages pane is "
        "written as `name==version` into the open notebook's PEP 723 header (and removed on "
        "uninstall), so the notebook's repository declares it; needs uv (with `--installer "
        "pip` nothing is recorded). marimo also pins there the installed version of each "
        "package the notebook imports; such a pin gives way to `requirements.txt` (see "
        '"Where dependencies come from" in README). Off for teams that curate '
        "`requirements.txt` by hand: Install-button packages then stay in the state folder's "
        "ledger",
        default=True,
        default_text="on",
        switch=True,
        into="jobs",
    ),
    Option(
        "--env-location",
        "where the Python packages marimo's kernels import run from: `local` (the container's "
        "own disk, `--env-dir`, with a snapshot on the state volume to restore from), "
        "`volume` (the state volume itself), or `auto` (local when the state volume is a "
        "network filesystem); see state_layout.md",
        default="auto",
        choices=ENV_LOCATIONS,
        into="jobs",
    ),
    Option(
        "--env-dir",
        "the folder on the container's own disk the environment runs from when it is local",
        default_text="`<temp dir>/marimo-orchestrator-env-<hash of the state folder>`",
    ),
    Option(
        "--marimo-mode",
        "`edit` (the notebook editor) or `run` (notebooks as read-only apps)",
        default="edit",
        choices=MODES,
        into="jobs",
    ),
    Option(
        "--marimo-ready-timeout",
        "seconds marimo may take to answer `/health` after it starts",
        default=300.0,
        convert=float,
        check=positive,
        into="jobs",
    ),
    Option(
        "--lease-seconds",
        "run mode on a shared state folder: a replica building the environment whose lease "
        "heartbeat stopped this long ago (killed, cut off) is taken over by another; see "
        "state_layout.md",
        default=30.0,
        convert=float,
        check=positive,
        into="jobs",
    ),
    Option(
        "--marimo-crash-window",
        "marimo exiting within this many seconds of its start counts towards a crash loop; 5 "
        "in a row stop the restarts (restarts back off exponentially with jitter)",
        default=30.0,
        convert=float,
        check=positive,
        into="jobs",
    ),
    Option(
        "--marimo-probe-interval",
        "seconds between two checks that a running marimo still answers (`/health`, on a "
        "connection of its own); a marimo that stops answering (hung) is killed and restarted "
        "as after a crash, and open tabs reconnect",
        default=2.0,
        convert=float,
        check=positive,
    ),
    Option(
        "--marimo-probe-timeout",
        "seconds one check may take before it counts as missed",
        default=2.0,
        convert=float,
        check=positive,
    ),
    Option(
        "--marimo-probe-misses",
        "missed checks in a row that make marimo hung (`0`: not checked); a hang is noticed "
        "within interval + misses × the larger of interval and timeout seconds (12 s by "
        "default), so a shorter pause fails nothing",
        default=5,
        convert=int,
        check=not_negative,
    ),
    Option(
        "--marimo-switch-drain",
        "run mode: a move to a new environment starts the new marimo beside the running one "
        "and serves it once it answers; the old one then has this many seconds to answer "
        "the requests it was sent before it is stopped (its WebSockets close at once with "
        "the restart code, so open tabs reconnect)",
        default=30.0,
        convert=float,
        check=positive,
    ),
    Option(
        "--marimo-switch-margin",
        "run mode: MiB of memory that must stay available beyond a second marimo as large as "
        "the running one (its kernels included) for a move to a new environment to run both "
        "side by side; with less, marimo is stopped first and started on the new "
        "environment, with a short outage (the log and the board say so)",
        default=256,
        convert=int,
        check=not_negative,
    ),
    Option(
        "--auth",
        "`quix` (Quix tokens: portal iframe, PAT form, Bearer), `token` (one access token), "
        "`none` (no sign-in; warns beyond loopback)",
        default_text="`quix` when `Quix__Portal__Api` is set, else `token`",
        choices=AUTH_MODES,
    ),
    Option(
        "--token",
        "the access token in `token` mode (12+ characters)",
        default_text="generated, printed once with a login URL",
    ),
    Option(
        "--frame-ancestors",
        "who may embed the pages in a frame (CSP `frame-ancestors`); anything beyond `'self'` "
        "makes the sign-in cookie `Secure; SameSite=None; Partitioned`, so sign-in works "
        "inside those frames (over https)",
        default_text="`*` in quix mode, `'self'` elsewhere",
    ),
    Option(
        "--allowed-hosts",
        "comma-separated `Host` names served besides loopback names and IP literals "
        "(`*.example.com` for a domain, `*` for any); enforced when listening on loopback, or "
        'whenever given (DNS rebinding; see "Sign-in" in README)',
        default_text="none",
    ),
    Option(
        "--trust-proxy",
        "trust `X-Forwarded-For`/`-Proto`/`-Host` from a proxy in front: the client's address "
        "for sign-in throttling, https for `Secure` cookies and origin checks",
        default_text="on inside Quix, off elsewhere",
        switch=True,
    ),
    Option(
        "--quix-recheck",
        "seconds after which a Quix session's token is checked with the portal again",
        default=300.0,
        convert=float,
        check=positive,
        into="config",
    ),
    Option(
        "--quix-grace",
        "seconds a Quix session is kept while the portal cannot be reached to re-check it",
        default=1800.0,
        convert=float,
        check=positive,
        into="config",
    ),
    Option(
        "--portal-origins",
        "comma-separated page origins allowed to hand the sign-in page a token "
        "(`postMessage` `AUTH_TOKEN`)",
        default_text="`https://portal.cloud.quix.io` in quix mode, none elsewhere",
    ),
    Option(
        "--marimo-user",
        "run marimo, and so notebook code, as this user (name or uid) in the orchestrator's "
        "group, so it cannot read the orchestrator's secrets; needs `CAP_SETUID`, "
        "`CAP_SETGID` and `CAP_KILL` (the image's entry point sets this up when started as "
        "root)",
        default_text="none (the image's entry point sets `notebook`)",
    ),
    Option(
        "--quix-restart-call",
        "the portal call that restarts this deployment, as `'METHOD path'` with "
        "`{workspace_id}` and `{deployment_id}`",
        default_text="`POST workspaces/{workspace_id}/deployments/update`",
    ),
    Option(
        "--quix-commit-message-param",
        "a query parameter of the file call that carries `[AutoCommit] Updated <file>` "
        "(Quix's own commit message style) with each notebook push; Quix documents no "
        "message for that call, so none is sent unless set",
        default_text="none",
    ),
    Option(
        "--quix-delete-call",
        "the portal call that deletes one application file, as `'METHOD path'` with "
        "`{workspace_id}`, `{application_id}` and `{path}`; Quix documents none, so without "
        "it deleted and renamed notebooks are listed as not propagated",
        default_text="none",
    ),
    Option(
        "--sync-to-quix",
        "save notebook edits back to the Quix application's files (see \"Saving notebooks to "
        'Quix" in README)',
        default_text="on inside Quix in edit mode, off elsewhere",
        switch=True,
    ),
    Option(
        "--sync-debounce",
        "seconds without further edits before they are saved to Quix",
        default=5.0,
        convert=float,
        check=positive,
        into="config",
    ),
    Option(
        "--metrics-public",
        "serve `/-/metrics` without sign-in (for a scraper inside the cluster)",
        default=False,
        default_text="off",
        switch=True,
        into="config",
    ),
    Option(
        "--open",
        "the notebook a visit to `/` opens, relative to `NOTEBOOK_DIR`; with neither default, "
        "marimo's file list",
        default_text="the only notebook there, else `main.py`",
        dest="open_notebook",
    ),
    Option(
        "--environment-panel",
        "add the Environment button, panel and notices to marimo's pages (`false`: marimo's "
        "pages pass unchanged)",
        default=True,
        convert=boolean,
        into="config",
    ),
    Option(
        "--log-format",
        "`text` for people, or `json` for one JSON object per line (tagged with step and source)",
        default="text",
        choices=LOG_FORMATS,
        into="config",
    ),
    Option(
        "--log-level",
        "log verbosity: `debug`, `info`, `warning`, `error`",
        default="info",
        choices=LOG_LEVELS,
        into="config",
    ),
    Option(
        "--sse-keepalive",
        "seconds between keep-alive comments on `/-/events`",
        default=15.0,
        convert=float,
        check=positive,
        into="config",
    ),
)
