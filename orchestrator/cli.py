"""Command line: ``marimo-orchestrator [NOTEBOOK_DIR]``; every flag has an ORCHESTRATOR_* twin.

The parser is made from the declarations in orchestrator/options.py, one per setting.

Only the standard library is imported here, so ``--help`` and configuration errors are instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from orchestrator.config import Config, ConfigError, resolve
from orchestrator.options import OPTIONS, Option, boolean


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


def _from_env(option: Option, env: Mapping[str, str], errors: list[str]) -> object:
    """The option's default: its environment twin, converted, when set; else its own."""
    raw = env.get(option.env)
    if raw is None or raw == "":
        return option.default
    try:
        return boolean(raw) if option.switch else option.convert(raw)
    except ValueError as error:
        shown = option.env if option.switch else f"{option.env}={raw!r}"
        errors.append(f"environment variable {shown} is invalid: {error}")
        return option.default


def _add(parser: argparse.ArgumentParser, option: Option, default: object) -> None:
    shown = f" (default: {option.shown_default})" if option.shown_default else ""
    # Markdown code spans read as plain words in a terminal; argparse %-formats help texts.
    text = f"{option.help}{shown} [env: {option.env}]".replace("`", "").replace("%", "%%")
    if not option.name.startswith("--"):
        parser.add_argument(option.key, nargs="?", default=default, metavar=option.name, help=text)
    elif option.switch:
        parser.add_argument(
            option.name,
            dest=option.key,
            action=argparse.BooleanOptionalAction,
            default=default,
            help=text,
        )
    else:
        parser.add_argument(
            option.name,
            dest=option.key,
            default=default,
            type=option.convert,
            choices=option.choices,
            metavar=None if option.choices else option.name[2:].replace("-", "_").upper(),
            help=text,
        )


def build_parser(env: Mapping[str, str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of :data:`orchestrator.options.OPTIONS`, each defaulting to its environment
    twin; with the errors converting those twins (reported only when parsing gets that far, so
    ``--help`` still answers)."""
    parser = argparse.ArgumentParser(
        prog="marimo-orchestrator",
        # No abbreviations: docker/entrypoint.sh reads the same command line and knows whole
        # flags only (orchestrator.option_documents.switch_flags), so both read it the same
        # way.
        allow_abbrev=False,
        formatter_class=_HelpFormatter,
        description=(
            "Serve a marimo notebook folder from a container: the port answers at once with a "
            "live loading page while a persistent venv is prepared and requirements are "
            "installed in the background; then every request is proxied to marimo. "
            "Own routes live under /-/ (healthy, ready, status, events)."
        ),
    )
    errors: list[str] = []
    for option in OPTIONS:
        _add(parser, option, _from_env(option, env, errors))
    return parser, errors


def parse(argv: Sequence[str], env: Mapping[str, str]) -> Config:
    parser, env_errors = build_parser(env)
    args = parser.parse_args(list(argv))
    if env_errors:
        raise ConfigError(env_errors[0])
    return resolve(vars(args), env)


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
