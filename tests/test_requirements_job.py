"""The requirements job alone, against a real venv, real uv/pip and the local index.

The image here is the test's own environment (the venv is layered on it exactly as on an image's
system Python), which has ``packaging`` and ``requests`` but the local index does not.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import shutil
from pathlib import Path

import pytest

from jobs import requirements as requirements_job
from jobs import venv as venv_job
from jobs.errors import JobError, PermanentError, TransientError
from jobs.install_summary import no_changes
from jobs.installers import resolve_installer
from jobs.layout import StateLayout
from jobs.ledger import scan
from jobs.manifest import Manifest
from jobs.requirements import InstallOutcome
from tests.support.index import LocalIndex
from tests.support.orchestrator import hermetic_env
from tests.support.reporter import RecordingReporter


def make_venv(tmp_path: Path, installer_name: str, env: dict[str, str]) -> StateLayout:
    layout = StateLayout(tmp_path / "state")
    layout.root.mkdir()
    installer = resolve_installer(installer_name)  # type: ignore[arg-type]
    asyncio.run(venv_job.create(layout, installer, env, RecordingReporter()))
    return layout


def install(
    layout: StateLayout, installer_name: str, requirements: Path, env: dict[str, str]
) -> tuple[InstallOutcome, RecordingReporter]:
    reporter = RecordingReporter()
    installer = resolve_installer(installer_name)  # type: ignore[arg-type]
    outcome = asyncio.run(requirements_job.install(requirements, layout, installer, env, reporter))
    return outcome, reporter


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_what_the_image_provides_is_neither_downloaded_nor_copied(
    tmp_path: Path, index: LocalIndex, installer: str
) -> None:
    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, installer, env)
    requirements = tmp_path / "requirements.txt"
    # packaging and requests come with the image (and are not on the local index at all).
    requirements.write_text("packaging\nrequests>=2\norch-needs-packaging\n")
    outcome, reporter = install(layout, installer, requirements, env)
    assert outcome.kind == "installed" and outcome.message.startswith("Installed")
    in_venv = scan(layout.venv)
    assert "orch-needs-packaging" in in_venv
    assert "packaging" not in in_venv and "requests" not in in_venv
    # What the install changed, the same whichever installer ran (the venv before and after).
    assert outcome.changes is not None
    assert outcome.changes["added"] == [
        {"name": "orch-needs-packaging", "version": "1.0", "for": ["requirements.txt"]}
    ]
    assert outcome.changes["changed"] == outcome.changes["removed"] == []
    assert not any(
        "/simple/packaging" in path or "/simple/requests" in path for path in index.control.requests
    )
    if installer == "uv":
        assert any("Already provided: packaging" in line for line in reporter.lines)


def test_a_requirement_that_demands_a_newer_image_package_gets_it(
    tmp_path: Path, index: LocalIndex
) -> None:
    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, "uv", env)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("orch-needs-new-packaging\n")
    outcome, reporter = install(layout, "uv", requirements, env)
    assert outcome.kind == "installed"
    assert scan(layout.venv).get("packaging") == "999.0"
    image_version = importlib.metadata.version("packaging")
    assert any(image_version not in line and "packaging" in line for line in reporter.lines)


def test_skip_when_unchanged_and_rerun_on_any_change(tmp_path: Path, index: LocalIndex) -> None:
    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, "uv", env)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("orch-alpha\n")
    first = install(layout, "uv", requirements, env)[0]
    assert first.kind == "installed"
    assert first.changes is not None
    assert first.changes["added"] == [
        {"name": "orch-alpha", "version": "1.0", "for": ["requirements.txt"]}
    ]
    index.control.requests.clear()
    assert install(layout, "uv", requirements, env)[0] == InstallOutcome(
        "unchanged", "requirements.txt unchanged since the last install", changes=no_changes()
    )
    assert index.control.requests == []
    # Another index setting is another install (incremental: nothing new is fetched).
    changed_env = {**env, "UV_EXTRA_INDEX_URL": index.url}
    assert install(layout, "uv", requirements, changed_env)[0].kind == "installed"
    requirements.write_text("orch-alpha\norch-gamma\n")
    assert install(layout, "uv", requirements, changed_env)[0].kind == "installed"
    assert "orch-gamma" in scan(layout.venv)


def test_no_requirements_file_is_nothing_to_install(tmp_path: Path) -> None:
    """No installer runs, nothing is written to the state, and the step says which file."""
    layout = StateLayout(tmp_path / "state")
    missing = tmp_path / "requirements.txt"
    outcome, _ = install(layout, "uv", missing, hermetic_env())
    assert outcome.kind == "no_file"
    assert outcome.message.startswith(f"nothing declared: no requirements file at {missing}")
    assert not layout.root.exists()


def test_an_interrupted_install_is_redone_with_a_reinstall(
    tmp_path: Path, index: LocalIndex
) -> None:
    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, "uv", env)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("orch-alpha\n")
    assert install(layout, "uv", requirements, env)[0].kind == "installed"
    # Simulate a kill after the files landed but before success was recorded, with damage.
    manifest = Manifest.load(layout.manifest)
    manifest.pending_install, manifest.install = "interrupted", None
    manifest.save(layout.manifest)
    damaged = next(layout.venv.glob("lib/python*/site-packages/orch_alpha/__init__.py"))
    damaged.unlink()
    outcome, reporter = install(layout, "uv", requirements, env)
    assert outcome.kind == "installed"
    assert any("interrupted" in line for line in reporter.lines)
    assert damaged.exists()


def test_a_syntax_error_names_the_line(tmp_path: Path, index: LocalIndex) -> None:
    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, "uv", env)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("orch-alpha\norch-beta>=>1\n")
    with pytest.raises(PermanentError, match=r"line 2: 'orch-beta>=>1' is not a valid requirement"):
        install(layout, "uv", requirements, env)


def test_a_flaky_index_is_retried_with_visible_attempts(tmp_path: Path, index: LocalIndex) -> None:
    from jobs.retry import POLICIES, RetryPolicy, run_step

    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, "uv", env)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("orch-alpha\n")
    index.control.faults.extend(["503", "reset", "503", "503"])
    reporter = RecordingReporter()
    installer = resolve_installer("uv")
    policy = RetryPolicy(attempts=6, initial=0.05, maximum=0.2)
    assert POLICIES["requirements"].attempts >= 5

    async def attempt() -> InstallOutcome:
        return await requirements_job.install(requirements, layout, installer, env, reporter)

    outcome = asyncio.run(run_step("requirements", attempt, reporter, policy))
    assert outcome.kind == "installed" and "orch-alpha" in scan(layout.venv)
    retries = [event for event in reporter.events if event[0] == "retrying"]
    assert retries, reporter.lines
    assert index.control.served_faults


def test_a_removed_pin_of_an_image_package_takes_effect(tmp_path: Path, index: LocalIndex) -> None:
    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, "uv", env)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("packaging==999.0\n")
    assert install(layout, "uv", requirements, env)[0].kind == "installed"
    assert scan(layout.venv).get("packaging") == "999.0"
    requirements.write_text("orch-alpha\n")
    outcome, _ = install(layout, "uv", requirements, env)
    image_version = importlib.metadata.version("packaging")
    assert f"removed the venv's packaging 999.0 (the image has {image_version})" in outcome.message
    assert "packaging" not in scan(layout.venv), "the image's packaging is seen again"
    assert "orch-alpha" in scan(layout.venv)


def test_what_an_install_that_failed_half_way_put_in_is_never_the_users(
    tmp_path: Path, wheelhouse: Path
) -> None:
    """orch-alpha gets in, then the install fails (packaging>=999, needed by another
    requirement, is not on this index): orch-alpha is ours, also once it leaves the file."""
    from jobs import ledger

    partial = tmp_path / "partial-index"
    partial.mkdir()
    for wheel in wheelhouse.glob("orch_*.whl"):
        shutil.copy(wheel, partial)
    with LocalIndex(partial) as served:
        env = hermetic_env(served.env())
        layout = make_venv(tmp_path, "uv", env)
        requirements = tmp_path / "requirements.txt"
        requirements.write_text("orch-alpha\norch-needs-new-packaging\n")
        with pytest.raises(JobError):
            install(layout, "uv", requirements, env)
        assert "orch-alpha" in scan(layout.venv), "it got in before the failure"
        requirements.write_text("orch-gamma\n")  # the user drops both
        install(layout, "uv", requirements, env)
    synced = ledger.sync(layout, requirements)
    assert "orch-alpha" not in synced.user and "orch-needs-new-packaging" not in synced.user
    assert synced.user == {}, synced


def venv_prints(layout: StateLayout, code: str) -> str:
    """What the venv's interpreter prints, run from elsewhere (no import from the cwd)."""
    import subprocess

    done = subprocess.run(
        [str(layout.venv_python), "-c", code], capture_output=True, text=True, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_relative_paths_mean_what_they_mean_next_to_the_requirements_file(
    tmp_path: Path, index: LocalIndex, installer: str
) -> None:
    from jobs import ledger
    from tests.support.wheels import build_wheel, write_local_project

    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, installer, env)
    app = tmp_path / "app"
    wheel = build_wheel(app, "orch-local", "1.0", module_source="EDITION = 1\n")
    write_local_project(app / "localpkg", "localpkg")
    (app / "extra.txt").write_text("orch-alpha\n")
    requirements = app / "requirements.txt"
    requirements.write_text(f"./{wheel.name}\n-e ./localpkg\n-r extra.txt\n")
    assert Path.cwd() != app, "the test runs from elsewhere, as the orchestrator does"

    outcome, reporter = install(layout, installer, requirements, env)
    assert outcome.kind == "installed", outcome
    printed = venv_prints(
        layout, "import orch_local, localpkg, orch_alpha; print(orch_local.EDITION)"
    )
    assert printed == "1"
    assert any(line.endswith(f" in {app}") for line in reporter.lines if "Running" in line)
    assert ledger.sync(layout, requirements).user == {}, "a local wheel is ours, not the user's"

    # Another build of the wheel under the same version is a change, and it gets installed.
    build_wheel(app, "orch-local", "1.0", module_source="EDITION = 2\n")
    again, reporter = install(layout, installer, requirements, env)
    assert again.kind == "installed", (again, reporter.lines)
    assert venv_prints(layout, "import orch_local; print(orch_local.EDITION)") == "2"
    assert install(layout, installer, requirements, env)[0].kind == "unchanged"


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: connecting is refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def runs_of(reporter: RecordingReporter) -> int:
    return sum(1 for line in reporter.lines if line.startswith("[orchestrator] Running "))


@pytest.mark.parametrize("installer", ["uv", "pip"])
@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("no-such-package-at-all", "no-such-package-at-all"),  # not on the index at all
        ("orch-alpha>=5", "orch-alpha>=5"),  # the index has 1.0 only
    ],
)
def test_an_answer_that_cannot_change_fails_at_once(
    tmp_path: Path, index: LocalIndex, installer: str, line: str, named: str
) -> None:
    from jobs.retry import POLICIES, run_step

    # A narrow terminal where the orchestrator was started (uv wraps its words to COLUMNS):
    # the cause is still read whole.
    env = hermetic_env({**index.env(), "COLUMNS": "40"})
    layout = make_venv(tmp_path, installer, env)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"orch-gamma\n{line}\n")
    reporter = RecordingReporter()
    chosen = resolve_installer(installer)  # type: ignore[arg-type]

    async def attempt() -> InstallOutcome:
        return await requirements_job.install(requirements, layout, chosen, env, reporter)

    with pytest.raises(PermanentError) as failure:
        asyncio.run(run_step("requirements", attempt, reporter, POLICIES["requirements"]))
    assert f"cannot install '{named}'" in str(failure.value), failure.value
    assert runs_of(reporter) == 1, reporter.lines
    assert not [event for event in reporter.events if event[0] == "retrying"]


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_failing_git_or_url_line_is_named_with_its_line(
    tmp_path: Path, index: LocalIndex, installer: str
) -> None:
    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, installer, env)
    requirements = tmp_path / "requirements.txt"
    port = closed_port()
    refused = f"git+http://127.0.0.1:{port}/x.git@v1"
    url = f"orch-x @ http://127.0.0.1:{port}/files/orch_x-1.0-py3-none-any.whl"
    missing = f"git+{index.url.removesuffix('/simple')}/no-such-repository.git"  # answers 404
    cases: list[tuple[str, str, int, type[JobError]]] = [
        # Refused: the network, worth another try.
        (f"orch-alpha\n# a comment\n{refused}\n", refused, 3, TransientError),
        (f"orch-alpha\n{url}\n", url, 2, TransientError),
        # The server answers that there is no such repository: that will not change.
        (f"{missing}\norch-alpha\n", missing, 1, PermanentError),
    ]
    for content, line, number, kind in cases:
        requirements.write_text(content)
        with pytest.raises(JobError) as failure:
            install(layout, installer, requirements, env)
        said = str(failure.value)
        assert type(failure.value) is kind, said
        assert said.startswith(f"could not fetch {line} (requirements.txt line {number}): "), said
        assert "package index" not in said


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_missing_local_wheel_is_named_with_its_line(
    tmp_path: Path, index: LocalIndex, installer: str
) -> None:
    env = hermetic_env(index.env())
    layout = make_venv(tmp_path, installer, env)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("orch-alpha\n./orch_gone-1.0-py3-none-any.whl\n")
    with pytest.raises(PermanentError) as failure:
        install(layout, installer, requirements, env)
    said = str(failure.value)
    assert said.startswith(
        "could not install ./orch_gone-1.0-py3-none-any.whl (requirements.txt line 2): "
    ), said
