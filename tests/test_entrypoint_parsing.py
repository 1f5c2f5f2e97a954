"""The container's entry point (docker/entrypoint.sh) reads the command line to find the
notebook folder and the state folder before the orchestrator starts (it hands them to the right
user). It must read it exactly as the orchestrator does: a switch before the notebook folder
(``--metrics-public /data/nb``) once made it take the folder for the switch's value."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import build_parser
from orchestrator.option_documents import SWITCHES_END, SWITCHES_START, switch_flags, with_switches
from orchestrator.options import OPTIONS
from tests.support.orchestrator import ROOT

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def entrypoint_reads(argv: list[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """The folders the entry point would use for ``argv`` (its dry run: nothing changed)."""
    environ = {"PATH": os.environ["PATH"], "MARIMO_ORCHESTRATOR_ENTRYPOINT_DRY_RUN": "1"}
    done = subprocess.run(
        ["bash", str(ENTRYPOINT), *argv],
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


def orchestrator_reads(argv: list[str]) -> dict[str, str]:
    """The same folders as the orchestrator's own parser reads them (defaults as the entry
    point resolves them without Quix's variables)."""
    parsed = build_parser({})[0].parse_args(argv)
    return {
        "state_dir": os.path.realpath(parsed.state_dir or "state"),
        "notebook_dir": os.path.realpath(parsed.notebook_dir),
    }


def test_the_entry_points_list_of_switches_is_made_from_the_declarations() -> None:
    script = ENTRYPOINT.read_text(encoding="utf-8")
    assert SWITCHES_START in script and SWITCHES_END in script
    assert with_switches(script) == script, "stale list of switches: run make readme-options"
    assert "--metrics-public" in switch_flags() and "--no-trust-proxy" in switch_flags()


SWITCHES = [flag for flag in switch_flags() if flag not in ("-h", "--help")]


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_before_the_notebook_folder_is_read_as_the_orchestrator_reads_it(
    switch: str, tmp_path: Path
) -> None:
    for argv in (
        [switch, "/data/nb"],
        ["--state-dir", "/data/state", switch, "/data/nb"],
        [switch, "--port", "9000", "/data/nb", "--state-dir=/data/s2"],
        ["--sync-debounce", "3", switch, "--", "/data/nb"],
    ):
        assert entrypoint_reads(argv) == orchestrator_reads(argv), argv


def test_every_value_flag_takes_the_next_word_as_its_value() -> None:
    for option in OPTIONS:
        if option.switch or not option.name.startswith("--") or option.name == "--state-dir":
            continue
        value = option.choices[0] if option.choices else "1"
        argv = [option.name, value, "/data/nb"]
        assert entrypoint_reads(argv)["notebook_dir"] == "/data/nb", argv
        assert orchestrator_reads(argv)["notebook_dir"] == "/data/nb", argv


def test_the_environment_twins_and_quix_state_path_are_read_when_no_flag_says() -> None:
    read = entrypoint_reads([], {"Quix__Deployment__State__Path": "/app/state"})
    assert read["state_dir"] == "/app/state"
    read = entrypoint_reads(
        ["--trust-proxy"],
        {"ORCHESTRATOR_STATE_DIR": "/vol/s", "ORCHESTRATOR_NOTEBOOK_DIR": "/vol/nb"},
    )
    assert read == {"state_dir": "/vol/s", "notebook_dir": "/vol/nb"}


def test_an_abbreviated_flag_is_refused_by_the_orchestrator_as_the_entry_point_cannot_read_it() -> (
    None
):
    with pytest.raises(SystemExit):
        build_parser({})[0].parse_args(["--state", "/data/state", "/data/nb"])
