"""Bad configuration stops the start with one clear line and a non-zero exit code."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support.orchestrator import ROOT, hermetic_env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env=hermetic_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_names_every_option_and_its_env_twin() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in (
        "--port",
        "--host",
        "--state-dir",
        "--requirements",
        "--installer",
        "--marimo-mode",
    ):
        assert flag in result.stdout
        assert "ORCHESTRATOR_" + flag[2:].replace("-", "_").upper() in result.stdout


def test_missing_notebook_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert_one_line_error(run_cli(str(missing)), str(missing), "does not exist")


def test_unknown_installer_value(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path), "--installer", "conda")
    assert result.returncode == 2
    assert "--installer" in result.stderr and "conda" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_env_twin_names_the_variable(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path), env={"ORCHESTRATOR_PORT": "eighty"})
    assert_one_line_error(result, "ORCHESTRATOR_PORT", "eighty")


def test_env_twin_is_used(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path), env={"ORCHESTRATOR_MARIMO_MODE": "sideways"})
    assert_one_line_error(result, "--marimo-mode", "sideways")


def test_liveness_thresholds_out_of_range_name_the_setting(tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli(str(tmp_path), "--marimo-probe-interval", "0"), "--marimo-probe-interval", "0"
    )
    assert_one_line_error(
        run_cli(str(tmp_path), env={"ORCHESTRATOR_MARIMO_PROBE_MISSES": "-1"}),
        "--marimo-probe-misses",
        "-1",
    )
    assert_one_line_error(
        run_cli(str(tmp_path), env={"ORCHESTRATOR_MARIMO_PROBE_TIMEOUT": "soon"}),
        "ORCHESTRATOR_MARIMO_PROBE_TIMEOUT",
        "soon",
    )


def test_state_path_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli(str(tmp_path), "--state-dir", str(blocker / "state"))
    assert_one_line_error(result, str(blocker), "not a directory")


def test_port_already_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(str(tmp_path), "--port", str(port), "--state-dir", str(tmp_path / "state"))
    assert_one_line_error(result, str(port), "already in use")


def test_no_setting_object_shows_a_secret_in_its_repr(tmp_path: Path) -> None:
    """Configurations end up in tracebacks and debug lines: the access token, the Quix SDK
    token and the environment (index credentials) never appear in their reprs."""
    from jobs.marimo_command import TokenFile
    from orchestrator.cli import parse

    env = {
        "Quix__Portal__Api": "https://portal.example.com",
        "Quix__Workspace__Id": "ws",
        "Quix__Sdk__Token": "sdk-token-value-123",
        "PIP_INDEX_URL": "https://user:index-password@pypi.example.com/simple",
    }
    config = parse([str(tmp_path), "--auth", "token", "--token", "access-token-value"], env)
    token_file = TokenFile.create()
    try:
        shown = " ".join(repr(item) for item in (config, config.quix, config.jobs, token_file))
        assert config.token == "access-token-value" and config.quix is not None
        for secret in (
            "access-token-value",
            "sdk-token-value-123",
            "index-password",
            token_file.token,
        ):
            assert secret not in shown
    finally:
        token_file.remove()


def test_a_generated_token_is_long_and_url_safe(tmp_path: Path) -> None:
    from orchestrator.cli import parse

    tokens = {parse([str(tmp_path)], {}).token for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert token is not None and len(token) == 32
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_metrics_public_is_a_switch_with_a_true_false_twin(tmp_path: Path) -> None:
    from orchestrator.cli import parse

    folder = str(tmp_path)
    assert parse([folder, "--metrics-public"], {}).metrics_public is True
    assert parse([folder], {}).metrics_public is False
    twin = {"ORCHESTRATOR_METRICS_PUBLIC": "true"}
    assert parse([folder], twin).metrics_public is True
    assert parse([folder, "--no-metrics-public"], twin).metrics_public is False
    result = run_cli(folder, env={"ORCHESTRATOR_METRICS_PUBLIC": "maybe"})
    assert_one_line_error(result, "ORCHESTRATOR_METRICS_PUBLIC")


def test_sync_to_quix_only_in_edit_mode(tmp_path: Path) -> None:
    from orchestrator.cli import parse

    quix = {
        "Quix__Portal__Api": "http://127.0.0.1:9/",
        "Quix__Workspace__Id": "ws",
        "Quix__Application__Id": "app",
    }
    folder = str(tmp_path)
    assert parse([folder], quix).sync_to_quix is True
    assert parse([folder, "--marimo-mode", "run"], quix).sync_to_quix is False
    result = run_cli(folder, "--marimo-mode", "run", "--sync-to-quix", env=quix)
    assert_one_line_error(result, "--sync-to-quix", "edit")


def test_a_portal_call_that_is_not_method_and_path_names_its_setting(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path), "--quix-delete-call", "GET workspaces/{workspace_id}/x")
    assert_one_line_error(result, "--quix-delete-call", "DELETE workspaces/", "GET workspaces")
    result = run_cli(str(tmp_path), env={"ORCHESTRATOR_QUIX_RESTART_CALL": "POST"})
    assert_one_line_error(result, "--quix-restart-call", "'POST'")


def test_a_portal_call_is_parsed_once_into_its_method_and_path() -> None:
    from orchestrator.quix.settings import DELETE_METHODS, PortalCall

    call = PortalCall.parse("  delete  workspaces/{workspace_id}/files/{path} ", DELETE_METHODS)
    assert call == PortalCall("DELETE", "workspaces/{workspace_id}/files/{path}")
    assert str(call) == "DELETE workspaces/{workspace_id}/files/{path}"
