"""Each setting is declared once (orchestrator/options.py): README's table and ``--help`` are
made from the declarations, so neither can forget or misstate a setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import build_parser, parse
from orchestrator.config import ConfigError
from orchestrator.option_documents import TABLE_END, TABLE_START, readme_table
from orchestrator.options import OPTIONS
from tests.support.orchestrator import ROOT


def test_readme_table_is_the_one_made_from_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert TABLE_START in readme and TABLE_END in readme
    shown = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].lstrip("\n")
    assert shown == readme_table(), "README's options table is stale: run make readme-options"


def test_help_names_every_declared_option_its_env_twin_and_default() -> None:
    parser, errors = build_parser({})
    assert errors == []
    text = " ".join(parser.format_help().split())  # undo the terminal's line wrapping
    for option in OPTIONS:
        assert option.name in text
        assert f"[env: {option.env}]" in text
        if option.shown_default:
            assert f"(default: {option.shown_default.replace('`', '')})" in text


def test_every_env_twin_reaches_the_configuration(tmp_path: Path) -> None:
    """A twin set to a value that is not the default arrives where the flag would put it."""
    (tmp_path / "state").mkdir()
    twins = {
        "ORCHESTRATOR_STATE_DIR": str(tmp_path / "state"),
        "ORCHESTRATOR_PORT": "9123",
        "ORCHESTRATOR_STATE_TIMEOUT": "7",
        "ORCHESTRATOR_LEASE_SECONDS": "11",
        "ORCHESTRATOR_MARIMO_CRASH_WINDOW": "13",
        "ORCHESTRATOR_MARIMO_PROBE_INTERVAL": "0.5",
        "ORCHESTRATOR_MARIMO_PROBE_TIMEOUT": "1.5",
        "ORCHESTRATOR_MARIMO_PROBE_MISSES": "0",
        "ORCHESTRATOR_MARIMO_MODE": "run",
        "ORCHESTRATOR_INSTALLER": "pip",
        "ORCHESTRATOR_OPEN": "sub/book.py",
        "ORCHESTRATOR_ENVIRONMENT_PANEL": "false",
        "ORCHESTRATOR_TRUST_PROXY": "yes",
        "ORCHESTRATOR_LOG_FORMAT": "json",
        "ORCHESTRATOR_SYNC_DEBOUNCE": "2.5",
        "ORCHESTRATOR_RECORD_INSTALLS": "false",
    }
    config = parse([str(tmp_path)], twins)
    assert config.port == 9123 and config.jobs.state_dir == tmp_path / "state"
    assert config.jobs.state_timeout == 7 and config.jobs.lease_seconds == 11
    assert config.jobs.marimo_crash_window == 13 and config.jobs.marimo_mode == "run"
    assert config.jobs.installer == "pip" and config.open_notebook == "sub/book.py"
    assert config.environment_panel is False and config.trust_proxy is True
    assert config.log_format == "json" and config.sync_debounce == 2.5
    assert config.jobs.record_installs is False
    assert config.jobs.marimo_liveness == (0.5, 1.5, 0)
    assert not config.jobs.marimo_liveness.enabled
    assert parse([str(tmp_path)], {}).jobs.record_installs is True
    # The flag wins over its twin.
    assert parse([str(tmp_path), "--port", "9124"], twins).port == 9124


def test_an_option_that_nothing_reads_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setting declared but never read would be silently ignored: resolve refuses it."""
    import orchestrator.config
    from orchestrator.options import Option

    forgotten = Option("--forgotten", "declared and read nowhere", default=1, convert=int)
    monkeypatch.setattr(orchestrator.config, "OPTIONS", (*OPTIONS, forgotten))
    values = {option.key: option.default for option in OPTIONS}
    values.update(notebook_dir=str(tmp_path), forgotten=1)
    with pytest.raises(TypeError, match="forgotten"):
        orchestrator.config.resolve(values, {})


def test_an_env_twin_outside_the_choices_names_its_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--marimo-mode must be one of edit, run; got 'view'"):
        parse([str(tmp_path)], {"ORCHESTRATOR_MARIMO_MODE": "view"})


def test_a_checked_env_twin_names_its_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--sse-keepalive must be positive, got 0.0"):
        parse([str(tmp_path)], {"ORCHESTRATOR_SSE_KEEPALIVE": "0"})
