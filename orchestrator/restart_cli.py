"""``marimo-orchestrator restart --scope … --url … --token …``: the restart API from a terminal."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.actions import SCOPES


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marimo-orchestrator restart",
        description="Ask a running orchestrator to restart marimo, reinstall, or restart the "
        "whole deployment (Quix), then follow its progress.",
    )
    parser.add_argument("--scope", choices=SCOPES, required=True, help="what to restart")
    parser.add_argument(
        "--rebuild", action="store_true", help="with --scope install: recreate the venv first"
    )
    parser.add_argument(
        "--url",
        default=env.get("ORCHESTRATOR_URL") or "http://127.0.0.1:8080",
        help="the orchestrator's base URL [env: ORCHESTRATOR_URL]",
    )
    parser.add_argument(
        "--token",
        default=env.get("ORCHESTRATOR_TOKEN"),
        help="access token (Bearer) [env: ORCHESTRATOR_TOKEN]",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="return once the request is accepted"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait at most")
    return parser


def _summary(status: Mapping[str, Any]) -> str:
    running = [s for s in status.get("steps", []) if s.get("status") == "running"]
    if running:
        return f"{running[0]['name']}: {running[0]['message']}"
    return str(status.get("phase"))


def _step(status: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return next((s for s in status.get("steps", []) if s.get("name") == name), {})


def _finished(scope: str, before: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    """Has the restart asked for visibly completed?"""
    if not now.get("ready"):
        return False
    if scope == "deployment":
        return bool(now.get("boot_id") != before.get("boot_id"))
    if scope == "marimo":
        return bool(now.get("marimo", {}).get("pid") != before.get("marimo", {}).get("pid"))
    step = _step(now, "requirements")
    return step.get("status") != "running" and step.get("finished_at") != _step(
        before, "requirements"
    ).get("finished_at")


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    import requests

    args = build_parser(os.environ if env is None else env).parse_args(list(argv))
    base = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    before: dict[str, Any] = {}
    try:
        before = requests.get(f"{base}/-/status", headers=headers, timeout=10).json()
        response = requests.post(
            f"{base}/-/restart",
            json={"scope": args.scope, "rebuild": args.rebuild},
            headers=headers,
            timeout=30,
        )
    except (requests.RequestException, ValueError) as error:
        print(
            f"marimo-orchestrator restart: cannot reach {base}: {type(error).__name__}",
            file=sys.stderr,
        )
        return 1
    body = (
        response.json()
        if response.headers.get("Content-Type", "").startswith("application/json")
        else {}
    )
    if response.status_code != 202:
        message = body.get("error") or response.reason
        if response.status_code == 401:
            message = (
                f"{message}: pass the access token with --token (or ORCHESTRATOR_TOKEN)"
                if not args.token
                else f"{message}: the token given with --token (or ORCHESTRATOR_TOKEN) "
                "was not accepted"
            )
        print(
            f"marimo-orchestrator restart: refused ({response.status_code}): {message}",
            file=sys.stderr,
        )
        return 1
    print(f"accepted: restarting {args.scope}")
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status = requests.get(f"{base}/-/status", headers=headers, timeout=10).json()
        except (requests.RequestException, ValueError):
            time.sleep(1)  # a deployment restart takes the server away for a while
            continue
        summary = _summary(status)
        if summary != last:
            print(summary)
            last = summary
        if _finished(args.scope, before, status):
            print(f"done: {status.get('phase')}")
            return 0
        time.sleep(0.5)
    print("marimo-orchestrator restart: timed out waiting", file=sys.stderr)
    return 1
