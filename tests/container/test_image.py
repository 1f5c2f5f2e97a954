"""The user's image (examples/quix on our image) run for real with podman, as Quix would run it.

One state volume on the host, owned by a uid that is not the image's user, lives through two
containers: what the first installs (requirements, and a package added the way marimo's Install
button adds it) is still there in the second, which installs nothing and downloads nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container.podman import TIMINGS, Container, Podman, poll, processes_in_cgroup_of
from tests.support.index import LocalIndex

VOLUME_UID = 4242  # not the image's user (1000), not root: a volume as Quix may hand it over
IMAGE_UID = 1000
NOTEBOOK_UID = 1001  # marimo's own user: notebook code runs as it, in the server's group
MARIMO = f"{NOTEBOOK_UID}:{VOLUME_UID}"
STATE = "/app/state"
VENV_PYTHON = f"{STATE}/venv/bin/python"
REQUIREMENTS = "/test/requirements.txt"


def _mounts(state: Path, requirements: Path) -> list[str]:
    return [f"{state}:{STATE}", f"{requirements}:{REQUIREMENTS}:ro"]


def _environment(index: LocalIndex) -> dict[str, str]:
    # Both installers see only the local index; the example's own requirements.txt names a
    # PyPI package, so the test installs its own file (the same mechanism a user would use).
    return {**index.env(), "ORCHESTRATOR_REQUIREMENTS": REQUIREMENTS}


def _first_answer(container: Container, returned_at: float) -> float:
    """Seconds from `podman run` returning to the first 200 on /-/healthy."""

    def healthy() -> float | None:
        return time.monotonic() if container.get("/-/healthy").status_code == 200 else None

    answered_at = poll("/-/healthy answers", healthy, timeout=10, interval=0.01)
    return answered_at - returned_at


def _wait_ready(container: Container, timeout: float = 180) -> None:
    def ready() -> bool | None:
        return True if container.get("/-/ready").status_code == 200 else None

    try:
        poll("/-/ready turns 200", ready, timeout=timeout, interval=0.25)
    except AssertionError as error:
        try:
            status: object = container.status()
        except Exception as unavailable:
            status = f"unavailable: {unavailable}"
        details = f"{error}\n--- /-/status ---\n{status}\n--- logs ---\n{container.logs()}"
        raise AssertionError(details) from None


def _imports(container: Container, module: str) -> bool:
    """As the server's user: Python may write bytecode into the venv, which must stay theirs."""
    result = container.podman.run(
        "exec", "--user", f"{VOLUME_UID}:{VOLUME_UID}", container.name,
        VENV_PYTHON, "-c", f"import {module}",
    )  # fmt: skip
    return result.returncode == 0


def _downloads(index: LocalIndex) -> list[str]:
    with index.control.lock:
        return list(index.control.requests)


def test_state_volume_keeps_the_venv_across_containers(
    podman: Podman, example_image: str, container_index: LocalIndex, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    os.chown(state, VOLUME_UID, VOLUME_UID)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("orch-container-alpha==1.0\n", encoding="utf-8")
    env = _environment(container_index)

    # --- first container: answers at once, then installs and becomes ready --------------------
    started = time.monotonic()
    first, returned = podman.start(example_image, env=env, volumes=_mounts(state, requirements))
    since_return = _first_answer(first, returned)
    TIMINGS["podman run returned -> /-/healthy 200 (s)"] = since_return
    TIMINGS["podman run started -> /-/healthy 200 (s)"] = since_return + (returned - started)
    assert since_return < 1.0, f"/-/healthy took {since_return:.2f} s after podman run returned"

    page = first.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "Starting marimo" in page.text, "a browser gets the loading page while marimo starts"

    _wait_ready(first)
    TIMINGS["first start: podman run -> /-/ready 200 (s)"] = time.monotonic() - started
    status = first.status()
    assert status["phase"] == "ready"
    assert status["state"] == {"path": STATE, "persistent": True, "warning": None}
    assert first.step("requirements")["status"] == "done"
    assert _imports(first, "orch_container_alpha")
    assert "Starting marimo" not in first.get("/", headers={"Accept": "text/html"}).text

    # The server runs as the volume's owner, so what it writes there keeps that owner; marimo
    # (notebook code) runs as a user of its own, in the server's group.
    users = first.podman.check("top", first.name, "pid", "huser", "args").splitlines()[1:]
    servers = [line.split() for line in users if "marimo-orchestrator /app" in line]
    marimos = [line.split() for line in users if " -m marimo " in line]
    assert servers and all(line[1] == str(VOLUME_UID) for line in servers), users
    assert marimos and all(line[1] == str(NOTEBOOK_UID) for line in marimos), users
    assert (state / "venv").stat().st_uid == VOLUME_UID
    assert (state / "manifest.json").stat().st_uid == VOLUME_UID
    # ... and edit mode can save the notebook.
    first.exec("test", "-w", "/app/main.py", user=MARIMO)

    # What notebook code (marimo's user, no capability) can read of the server's secrets:
    # nothing; marimo's own environment holds no ORCHESTRATOR_* variable.
    assert first.exec("grep", "CapEff", "/proc/self/status", user=MARIMO).split()[1] == "0" * 16
    server_pid = servers[0][0]
    for secret in (f"{STATE}/session-secret", f"/proc/{server_pid}/environ"):
        denied = podman.run("exec", "--user", MARIMO, first.name, "cat", secret)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (secret, denied)
    marimo_env = first.exec("cat", f"/proc/{marimos[0][0]}/environ", user=MARIMO)
    assert "ORCHESTRATOR_" not in marimo_env and "PATH=" in marimo_env
    server_caps = first.exec("grep", "CapEff", f"/proc/{marimos[0][0]}/status", user=MARIMO)
    assert server_caps.split()[1] == "0" * 16, "marimo has no capability"

    # The image's HEALTHCHECK passes (podman cannot schedule it here: there is no systemd).
    assert podman.run("healthcheck", "run", first.name).returncode == 0

    # --- a package added the way marimo's Install button adds it -------------------------------
    # marimo (package manager "uv", set by the orchestrator) runs `$UV pip install PKG -p
    # <venv python>` with UV_CACHE_DIR on the volume, as marimo's user with the umask it
    # inherits from the server (0002): the same command.
    first.exec(
        "sh", "-c", 'umask 0002 && exec "$@"', "sh",
        "uv", "pip", "install", "orch-container-beta", "-p", VENV_PYTHON,
        user=MARIMO,
        env={"UV_CACHE_DIR": f"{STATE}/cache/uv"},
    )  # fmt: skip
    assert _imports(first, "orch_container_beta")
    downloads = _downloads(container_index)
    assert any("orch_container_beta" in path for path in downloads), downloads

    # --- podman stop: quick, clean, nothing left behind ----------------------------------------
    container_id = first.inspect("{{.Id}}")
    assert processes_in_cgroup_of(container_id), "the check below must be able to see processes"
    stop_started = time.monotonic()
    stopped = podman.run("stop", first.name, timeout=60)
    stop_seconds = time.monotonic() - stop_started
    TIMINGS["podman stop (s)"] = stop_seconds
    assert stopped.returncode == 0, stopped.stderr
    assert stop_seconds < 10, f"podman stop took {stop_seconds:.1f} s (SIGKILL after 10 s?)"
    assert first.inspect("{{.State.Status}} {{.State.ExitCode}}") == "exited 0"
    assert podman.run("top", first.name).returncode != 0, "no process runs in a stopped container"
    assert processes_in_cgroup_of(container_id) == []
    assert "stopped" in first.logs()

    # --- a new container on the same volume: nothing installed, nothing downloaded -------------
    restarted = time.monotonic()
    second, _ = podman.start(example_image, env=env, volumes=_mounts(state, requirements))
    _wait_ready(second)
    TIMINGS["second start: podman run -> /-/ready 200 (s)"] = time.monotonic() - restarted
    assert second.step("venv")["status"] == "done"
    assert "Reusing" in str(second.step("venv")["message"])
    requirements_step = second.step("requirements")
    assert requirements_step["status"] == "skipped", requirements_step
    assert "unchanged" in str(requirements_step["message"])
    assert _imports(second, "orch_container_alpha")
    assert _imports(second, "orch_container_beta")
    assert _downloads(container_index) == downloads, "the second start asked the index for nothing"
    # Everything on the volume is the server's or marimo's, in the server's group, and every
    # folder marimo made is the group's to change (a rebuild can remove it); the server's
    # secrets stay its own.
    everything = list(state.rglob("*"))
    strangers = [
        path
        for path in everything
        if path.lstat().st_uid not in (VOLUME_UID, NOTEBOOK_UID)
        or path.lstat().st_gid != VOLUME_UID
    ]
    assert strangers == [], "everything on the volume keeps its owner and group"
    closed = [
        path
        for path in everything
        if path.is_dir()
        and not path.is_symlink()
        and path.stat().st_uid == NOTEBOOK_UID
        and not path.stat().st_mode & 0o020
    ]
    assert closed == [], "marimo's folders are the group's to change"
    secret = (state / "session-secret").stat()
    assert (secret.st_uid, secret.st_mode & 0o777) == (VOLUME_UID, 0o600)


@dataclass(frozen=True)
class VolumeCase:
    owner: int  # of the host folder mounted as the volume
    runs_as: int  # who must own what the orchestrator writes there
    mount: str = STATE  # where the volume is mounted
    state: str = STATE  # the state folder inside the container
    options: tuple[str, ...] = ()
    command: tuple[str, ...] = ()


VOLUME_CASES = {
    # A fresh volume (new PVC, new named volume) belongs to root: handed to the image's user.
    "root-owned volume": VolumeCase(owner=0, runs_as=IMAGE_UID),
    # Kubernetes runAsUser + fsGroup: started as non-root, the entry point changes nothing.
    "started as the image's user": VolumeCase(
        owner=IMAGE_UID, runs_as=IMAGE_UID, options=("--user", f"{IMAGE_UID}:{IMAGE_UID}")
    ),
    # --state-dir names a folder still to be made inside a volume: the volume's owner counts.
    "state folder inside a volume": VolumeCase(
        owner=VOLUME_UID,
        runs_as=VOLUME_UID,
        mount="/data",
        state="/data/marimo",
        command=("/app", "--state-dir=/data/marimo"),
    ),
}


@pytest.mark.parametrize("case", list(VOLUME_CASES))
def test_state_volume_is_writable(
    podman: Podman,
    example_image: str,
    container_index: LocalIndex,
    tmp_path: Path,
    case: str,
) -> None:
    spec = VOLUME_CASES[case]
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o755)
    os.chown(volume, spec.owner, spec.owner)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("", encoding="utf-8")
    container, _ = podman.start(
        example_image,
        env=_environment(container_index),
        volumes=[f"{volume}:{spec.mount}", f"{requirements}:{REQUIREMENTS}:ro"],
        options=spec.options,
        command=spec.command,
    )

    def state_resolved() -> dict[str, object] | None:
        step = container.step("state")
        return step if step["status"] in ("done", "failed") else None

    step = poll(f"{case}: the state step ends", state_resolved, timeout=30, interval=0.1)
    assert step["status"] == "done", step
    assert container.status()["state"] == {"path": spec.state, "persistent": True, "warning": None}
    on_host = volume / Path(spec.state).relative_to(spec.mount)
    assert on_host.stat().st_uid == spec.runs_as
    assert (on_host / ".orchestrator.lock").stat().st_uid == spec.runs_as
