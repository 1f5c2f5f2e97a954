"""State files nobody foresaw, a crash of the jobs, and "restart marimo" from a failed state:
the real orchestrator on a real state directory, each fault made by hand as an operator would."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from jobs.layout import StateLayout
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.support.sign_in import cookie_of, login, request
from tests.support.wheels import build_wheel
from tests.test_persistent_env import imports, wait_for_file
from tests.test_restart import post_restart


def marimo_processes(run: Orchestrator) -> list[int]:
    """Every marimo server in the orchestrator's process tree."""
    found = []
    for child in psutil.Process(run.process.pid).children(recursive=True):
        try:
            if child.cmdline()[1:3] == ["-m", "marimo"]:
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


CORRUPTIONS = {
    "manifest is a JSON array": ("manifest.json", b"[]"),
    "manifest has mistyped records": (
        "manifest.json",
        b'{"venv": {"python_version": 3, "created_at": "x"}, "history": [1]}',
    ),
    "marimo.toml has non-UTF-8 bytes": (
        "config/marimo/marimo.toml",
        b"[display]\ntheme = '\xff\xfe'\n",
    ),
    "package_management is a string": (
        "config/marimo/marimo.toml",
        b'package_management = "uv"\n',
    ),
    "ledger is a JSON string": ("ledger.json", b'"garbage"'),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_an_unreadable_state_file_means_unknown_never_a_stuck_start(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path, case: str
) -> None:
    state = tmp_path / "state"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    first = orchestrator(notebook_dir, state)
    first.wait_ready()
    assert first.terminate() == 0
    relative, content = CORRUPTIONS[case]
    (state / relative).write_bytes(content)

    second = orchestrator(notebook_dir, state)
    status = second.wait_ready(timeout=90)
    assert status["phase"] == "ready", status
    assert second.get("/", {"Accept": "text/html"})[0] == 200
    assert marimo_processes(second) == [status["marimo"]["pid"]], "no marimo left unserved"
    assert imports(state, "orch_alpha")
    assert "crashed" not in second.log_text()


def test_a_crash_of_the_jobs_is_a_failed_phase_and_restart_marimo_recovers(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "config").write_text("not a folder")  # marimo's config folder cannot be made
    run = orchestrator(notebook_dir, state)
    status = run.wait_for(lambda s: s["phase"] != "starting", timeout=90, what="not starting")
    assert status["phase"] == "failed", status
    marimo = run.step(status, "marimo")
    assert marimo["status"] == "failed" and "crashed" in marimo["message"], marimo
    assert "config" in marimo["message"], "the message names what failed"
    assert run.get("/-/ready")[0] == 503
    assert run.get("/-/healthy")[0] == 200, "the page and its restart buttons stay reachable"
    assert not marimo_processes(run)

    (state / "config").unlink()
    code, _ = post_restart(run, {"scope": "marimo"})
    assert code == 202
    after = run.wait_ready(timeout=90)
    assert after["phase"] == "ready"
    assert run.get("/", {"Accept": "text/html"})[0] == 200


def test_a_corrupt_ledger_never_makes_requirements_or_pip_the_users(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    (notebook_dir / "requirements.txt").write_text("orch-beta\n")  # and orch-alpha, its dependency
    run = orchestrator(notebook_dir, state)
    run.wait_ready()
    StateLayout(state).ledger.write_text("{not json")
    assert run.marimo_install("orch-gamma")["success"] is True
    ledger = wait_for_file(StateLayout(state).ledger, lambda d: "orch-gamma" in d.get("user", {}))
    assert set(ledger["user"]) == {"orch-gamma"}, ledger


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-volume"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_state_volume_is_named_not_blamed_on_the_index(
    orchestrator: OrchestratorFactory, notebook_dir: Path, wheelhouse: Path, small_volume: Path
) -> None:
    build_wheel(wheelhouse, "orch-huge", "1.0", padding=60_000_000)
    (notebook_dir / "requirements.txt").write_text("orch-huge\n")
    run = orchestrator(notebook_dir, small_volume)
    status = run.wait_for(
        lambda s: run.step(s, "requirements")["status"] == "failed", timeout=120, what="failure"
    )
    step = run.step(status, "requirements")
    assert f"the disk holding {small_volume} is full" in step["message"], step
    assert "MB free" in step["message"] and "could not reach" not in step["message"]
    # uv's own words ("cause:" lines) are the step's detail, folded on the pages, not its message.
    assert "No space left on device (os error 28)" in step["detail"], "uv's cause: lines"
    assert "No space left on device (os error 28)" not in step["message"]
    assert step["attempt"] == 1, "a full disk is not retried"
    print(step["message"])
    assert run.wait_ready()["phase"] == "degraded", "marimo starts: the user can make room"


def fill(volume: Path) -> Path:
    """Write zeros into ``volume`` until not one more byte fits; the file that holds them."""
    filler = volume / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    return filler


def test_a_logout_on_a_full_state_volume_ends_every_session_for_good(
    orchestrator: OrchestratorFactory, notebook_dir: Path, small_volume: Path
) -> None:
    first = orchestrator(notebook_dir, small_volume)
    first.wait_ready()
    layout = StateLayout(small_volume)
    secret = layout.session_secret.read_bytes()
    leaving, staying = (cookie_of(login(first, first.token)[1]) for _ in range(2))
    for cookie in (leaving, staying):
        assert request(first, "GET", "/-/status", {"Cookie": cookie})[0] == 200
    filler = fill(small_volume)
    assert layout.revoked_sessions.stat().st_size == 0, "an append needs a new block"

    code, headers, _ = request(
        first, "POST", "/-/logout", {"Cookie": leaving, "Origin": first.base}
    )
    assert code == 303 and "signed_out=everyone" in headers["location"], headers
    code, _, page = request(first, "GET", headers["location"], {"Accept": "text/html"})
    assert code == 200 and b"everyone was signed out" in page, page
    for cookie in (leaving, staying):
        assert request(first, "GET", "/-/status", {"Cookie": cookie})[0] == 401
    assert not layout.session_secret.exists() or layout.session_secret.read_bytes() != secret
    again = cookie_of(login(first, first.token)[1])
    assert request(first, "GET", "/-/status", {"Cookie": again})[0] == 200, "sign-in still works"
    assert first.terminate() == 0

    # Restarted on the same volume, still full: the old sessions do not come back.
    second = orchestrator(notebook_dir, small_volume)
    second.wait_listening()
    assert second.get("/-/status")[0] == 200, "the server answers (control: a bearer token)"
    for cookie in (leaving, staying):
        assert request(second, "GET", "/-/status", {"Cookie": cookie})[0] == 401
    assert second.terminate() == 0

    # Room made again: still refused; a new session is kept across restarts as before.
    filler.unlink()
    third = orchestrator(notebook_dir, small_volume)
    third.wait_for(lambda s: s["state"]["path"] == str(small_volume), what="state resolved")
    assert request(third, "GET", "/-/status", {"Cookie": leaving})[0] == 401
    fresh = cookie_of(login(third, third.token)[1])
    assert third.terminate() == 0
    fourth = orchestrator(notebook_dir, small_volume)
    fourth.wait_listening()
    assert request(fourth, "GET", "/-/status", {"Cookie": fresh})[0] == 200
    assert request(fourth, "GET", "/-/status", {"Cookie": leaving})[0] == 401


@pytest.fixture
def volume_100m(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "volume-100m"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_an_install_that_failed_for_a_full_disk_runs_again_once_space_is_freed(
    orchestrator: OrchestratorFactory, notebook_dir: Path, wheelhouse: Path, volume_100m: Path
) -> None:
    build_wheel(wheelhouse, "orch-bulky", "1.0", padding=40_000_000)
    (notebook_dir / "requirements.txt").write_text("orch-bulky\n")
    user_data = volume_100m / "user-data.bin"  # someone's big file on the volume
    with user_data.open("wb") as sink:
        for _ in range(70):
            sink.write(bytes(1_000_000))
    run = orchestrator(notebook_dir, volume_100m)
    failed = run.wait_for(
        lambda s: run.step(s, "requirements")["status"] == "failed", timeout=120, what="failure"
    )
    message = run.step(failed, "requirements")["message"]
    assert f"the disk holding {volume_100m} is full" in message, message
    assert "once space is freed the install runs again by itself" in message, message
    assert '"Reinstall requirements" in the Environment panel' in message, message
    assert 'POST /-/restart {"scope": "install"}' in message, message
    assert run.wait_ready()["phase"] == "degraded"

    user_data.unlink()  # space comes back; nobody clicks anything
    recovered = run.wait_for(
        lambda s: run.step(s, "requirements")["status"] == "done", timeout=120, what="recovery"
    )
    assert recovered["phase"] == "ready", recovered
    assert imports(volume_100m, "orch_bulky")
    assert "Space was freed (" in run.log_text()


def test_a_download_stalled_mid_file_names_the_timeout_and_is_retried(
    orchestrator: OrchestratorFactory, notebook_dir: Path, index: LocalIndex, tmp_path: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-gamma\n")
    index.control.stall_midway["orch-gamma"] = 30
    run = orchestrator(notebook_dir, tmp_path / "state", env={"UV_HTTP_TIMEOUT": "2"})
    retrying = run.wait_for(
        lambda s: (run.step(s, "requirements")["attempt"] or 0) >= 2,
        timeout=90,
        what="a retry after the stall",
    )
    message = run.step(retrying, "requirements")["message"]
    assert "stalled" in message and "2 s" in message and "UV_HTTP_TIMEOUT" in message, message
    del index.control.stall_midway["orch-gamma"]
    status = run.wait_ready(timeout=120)
    assert run.step(status, "requirements")["status"] == "done", status
    assert imports(tmp_path / "state", "orch_gamma")


def test_a_killed_orchestrator_leaves_nothing_in_tmpdir(
    orchestrator: OrchestratorFactory, notebook_dir: Path, index: LocalIndex, tmp_path: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    (notebook_dir / "requirements.txt").write_text("orch-slow\n")
    release = index.control.hold("orch-slow")
    first = orchestrator(notebook_dir, tmp_path / "state", env={"TMPDIR": str(tmpdir)})
    assert index.control.arrived["orch-slow"].wait(60), "the install started"
    assert any(p.name.startswith("orchestrator-install-") for p in tmpdir.iterdir())
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    release.set()
    # Someone else's folder, owned by a live process (this test), is never touched.
    foreign = tmpdir / f"marimo-token-{os.getpid()}-0123456789abcdef"
    foreign.mkdir()
    second = orchestrator(notebook_dir, tmp_path / "state", env={"TMPDIR": str(tmpdir)})
    second.wait_ready()
    left = sorted(p.name for p in tmpdir.iterdir())
    assert left == [foreign.name], left
    assert f"Removed {tmpdir}/orchestrator-install-{first.process.pid}-" in second.log_text()


@pytest.fixture
def unusable_volume(tmp_path: Path) -> Iterator[Path]:
    """A state volume mounted read-only: the orchestrator falls back to a temporary folder."""
    mount_point = tmp_path / "ro-volume"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fallback_folders(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith("marimo-orchestrator-"))


def test_the_fallback_state_folder_is_removed_at_exit(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path, unusable_volume: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    run = orchestrator(notebook_dir, unusable_volume, env={"TMPDIR": str(tmpdir)})
    status = run.wait_ready()
    fallback = Path(status["state"]["path"])
    assert status["state"]["persistent"] is False and fallback.parent == tmpdir, status
    assert fallback.name.startswith(f"marimo-orchestrator-state-{run.process.pid}-")
    assert imports(fallback, "orch_alpha"), "the fallback holds a venv with the requirements"
    assert run.terminate() == 0
    assert fallback_folders(tmpdir) == []
    assert sorted(p.name for p in tmpdir.iterdir()) == [], "nothing at all is left in TMPDIR"


def test_a_killed_orchestrators_fallback_folder_is_removed_at_the_next_start(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path, unusable_volume: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    first = orchestrator(notebook_dir, unusable_volume, env=env)
    killed = Path(first.wait_ready()["state"]["path"])
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    first.kill_everything()  # its marimo dies with it (PR_SET_PDEATHSIG); reap for certain
    assert killed.is_dir(), "a SIGKILL leaves the folder behind"
    # A live orchestrator's fallback folder (this test process stands for one) is never touched.
    foreign = tmpdir / f"marimo-orchestrator-state-{os.getpid()}-0123456789abcdef"
    foreign.mkdir()
    second = orchestrator(notebook_dir, unusable_volume, env=env)
    own = Path(second.wait_ready()["state"]["path"])
    assert not killed.exists()
    assert fallback_folders(tmpdir) == sorted([foreign.name, own.name])
    assert f"Removed {killed}: its orchestrator died" in second.log_text()


def test_the_install_button_runs_in_the_state_venv_and_never_copies_the_images_packages(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    from jobs import ledger
    from jobs.image import image_distributions

    state = tmp_path / "state"
    layout = StateLayout(state)
    run = orchestrator(notebook_dir, state)
    run.wait_ready()
    printed = run.kernel_output("import sys\nprint(sys.prefix)")
    assert printed.strip() == str(layout.venv), "marimo's kernel runs from the state venv"
    assert "packaging" in image_distributions()
    # orch-needs-packaging needs packaging>=20, which the image has; the index offers 999.0.
    assert run.marimo_install("orch-needs-packaging")["success"] is True
    in_venv = ledger.scan(layout.venv)
    assert "orch-needs-packaging" in in_venv
    assert "packaging" not in in_venv, "the image's packaging is not shadowed by a copy"
    found = wait_for_file(layout.ledger, lambda d: "orch-needs-packaging" in d["user"])
    assert set(found["user"]) == {"orch-needs-packaging"}, found
    printed = run.kernel_output("import orch_needs_packaging, packaging\nprint(packaging.__file__)")
    assert str(layout.venv) not in printed, printed


def test_a_failed_install_is_not_taken_for_an_interrupted_one(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\nno-such-package-at-all\n")
    first = orchestrator(notebook_dir, state)
    first.wait_for(lambda s: first.step(s, "requirements")["status"] == "failed", what="failure")
    assert json.loads(StateLayout(state).manifest.read_text())["pending_install"] is None
    assert first.terminate() == 0
    second = orchestrator(notebook_dir, state)
    second.wait_for(lambda s: second.step(s, "requirements")["status"] == "failed", what="again")
    assert "interrupted" not in second.log_text()


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_package_the_index_does_not_have_fails_at_once_naming_it(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path, installer: str
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\nno-such-package-at-all\n")
    run = orchestrator(notebook_dir, tmp_path / "state", "--installer", installer)
    status = run.wait_ready()
    step = run.step(status, "requirements")
    assert status["phase"] == "degraded", "marimo serves: the user can fix the file"
    assert step["status"] == "failed" and step["attempt"] == 1, step
    assert "cannot install 'no-such-package-at-all'" in step["message"], step
    runs = [line for line in run.log_text().splitlines() if INSTALLER_RUN.search(line)]
    assert len(runs) == 1, runs


INSTALLER_RUN = re.compile(r"\[requirements:orchestrator\] Running \S+ (?:-m )?pip install ")
"""The log line of each installer run (uv's ``…/uv pip install``, pip's ``python -m pip install``)."""


def test_a_git_line_that_cannot_be_fetched_is_named_with_its_line(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    from tests.test_requirements_job import closed_port

    git = f"git+http://127.0.0.1:{closed_port()}/x.git"
    (notebook_dir / "requirements.txt").write_text(f"orch-alpha\n\n{git}\n")
    run = orchestrator(notebook_dir, tmp_path / "state")
    status = run.wait_for(
        lambda s: "could not" in run.step(s, "requirements")["message"], what="the failure"
    )
    message = run.step(status, "requirements")["message"]
    assert f"could not fetch {git} (requirements.txt line 3): " in message, message
    assert "Couldn't connect to server" in message, "git's own reason"
    assert "package index" not in message


def build_marimo_copy(directory: Path, version: str) -> Path:
    """A wheel of the image's own marimo under another version number: a real marimo a
    requirements file can pin, served only by a local index."""
    import base64
    import hashlib
    import importlib.metadata
    import zipfile

    dist = importlib.metadata.distribution("marimo")
    package = Path(str(dist.locate_file("marimo")))
    info = f"marimo-{version}.dist-info"
    metadata = (dist.read_text("METADATA") or "").split("\n\n", 1)[0]
    metadata = "\n".join(
        f"Version: {version}" if line.startswith("Version:") else line
        for line in metadata.splitlines()
    )
    target = directory / f"marimo-{version}-py3-none-any.whl"
    directory.mkdir(parents=True, exist_ok=True)
    record = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:

        def add(name: str, data: bytes) -> None:
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(data)}")
            archive.writestr(name, data)

        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                add(f"marimo/{path.relative_to(package)}", path.read_bytes())
        add(f"{info}/METADATA", (metadata + "\n").encode())
        add(
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return target


def test_a_marimo_pin_added_and_removed_takes_effect_and_says_so(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    import importlib.metadata

    image_version = importlib.metadata.version("marimo")
    pinned = f"{image_version}+pinned"
    wheels = tmp_path / "marimo-wheels"
    build_marimo_copy(wheels, pinned)
    state = tmp_path / "state"
    layout = StateLayout(state)
    requirements = notebook_dir / "requirements.txt"
    requirements.write_text(f"marimo=={pinned}\n")
    with LocalIndex(wheels) as marimo_index:
        run = orchestrator(notebook_dir, state, env=marimo_index.env())
        first = run.wait_ready(timeout=180)
        assert ledger_scan(layout).get("marimo") == pinned
        printed = run.kernel_output("import marimo\nprint(marimo.__file__)")
        assert printed.startswith(str(layout.venv)), printed

        requirements.write_text("")  # the pin goes
        after = run.wait_for(
            lambda s: s["ready"] and s["marimo"]["pid"] not in (None, first["marimo"]["pid"]),
            timeout=120,
            what="marimo restarted on the image's version",
        )
        assert f"marimo {pinned} → {image_version}" in str(after["marimo"]["last_exit"]), after
        message = run.step(after, "requirements")["message"]
        assert f"removed the venv's marimo {pinned}" in message, message
        assert "marimo" not in ledger_scan(layout)
        printed = run.kernel_output("import marimo\nprint(marimo.__file__)")
        assert not printed.startswith(str(layout.venv)), printed
        assert "marimo" not in json.loads(layout.ledger.read_text())["user"]


def ledger_scan(layout: StateLayout) -> dict[str, str]:
    from jobs.ledger import scan

    return scan(layout.venv)


def test_restart_marimo_after_the_crash_loop_stop(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    run = orchestrator(notebook_dir)
    status = run.wait_ready()
    for _ in range(5):  # five quick deaths in a row: the supervisor gives up
        os.kill(status["marimo"]["pid"], signal.SIGKILL)
        status = run.wait_for(
            lambda s, pid=status["marimo"]["pid"]: (
                (s["ready"] and s["marimo"]["pid"] != pid) or s["phase"] == "failed"
            ),
            what="marimo back, or given up",
        )
    assert status["phase"] == "failed", status
    assert "crashed 5 times in a row" in run.step(status, "marimo")["message"]
    assert status["marimo"]["pid"] is None, "no dead pid in the status"

    assert post_restart(run, {"scope": "marimo"})[0] == 202
    after = run.wait_ready(timeout=90)
    assert after["phase"] == "ready" and psutil.pid_exists(after["marimo"]["pid"])
    assert run.get("/", {"Accept": "text/html"})[0] == 200


def test_an_install_button_package_that_needs_a_newer_image_package_gets_it_and_says_so(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    from jobs import ledger
    from jobs.image import image_distributions

    state = tmp_path / "state"
    layout = StateLayout(state)
    image_version = image_distributions()["packaging"]
    run = orchestrator(notebook_dir, state)
    run.wait_ready()
    # orch-needs-new-packaging needs packaging>=999: the image's will not do.
    assert run.marimo_install("orch-needs-new-packaging")["success"] is True
    status = run.wait_for(
        lambda s: "replaced" in run.step(s, "requirements")["message"], timeout=60, what="a word"
    )
    message = run.step(status, "requirements")["message"]
    assert (
        f"the image's packaging {image_version} is replaced in the venv by packaging 999.0: "
        "orch-needs-new-packaging needs packaging>=999"
    ) in message, message
    assert ledger.scan(layout.venv).get("packaging") == "999.0"
    found = wait_for_file(layout.ledger, lambda d: "orch-needs-new-packaging" in d["user"])
    assert "packaging" not in found["user"], "a copy of an image package is not the user's"
