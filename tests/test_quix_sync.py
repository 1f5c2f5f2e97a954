"""Notebook edits are saved back to the Quix application's files, in Quix's own layout: notebooks
in an ``app`` folder, the state volume mounted *inside* it (``app/state``), ``Quix__*`` set, sync
on, against the fake portal. Once, in order, never the state folder, through an outage, a
container replacement and a change made in Quix meanwhile."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.notebooks import NOTEBOOK
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.support.quix_portal import FakeQuixPortal

USER = "quix-user-token-0001"
EDIT = "# written during the outage\n"


@pytest.fixture
def portal() -> Iterator[FakeQuixPortal]:
    with FakeQuixPortal() as fake:
        fake.state.allowed_tokens.add(USER)
        yield fake


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """/app as Quix runs it: the notebook, and the state volume Quix mounts at app/state."""
    directory = tmp_path / "app"
    (directory / "state").mkdir(parents=True)
    (directory / "notebook.py").write_text(NOTEBOOK, encoding="utf-8")
    return directory


def quix_env(portal: FakeQuixPortal, app: Path, state: bool = True) -> dict[str, str]:
    env = portal.env()
    if state:
        env["Quix__Deployment__State__Path"] = str(app / "state")
        env["Quix__Deployment__State__Enabled"] = "true"
    return env


def start(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal, *args: str
) -> Orchestrator:
    run = orchestrator(
        app,
        app / "state",
        "--auth",
        "quix",
        "--sync-debounce",
        "0.3",
        *args,
        env=quix_env(portal, app),
    )
    run.token = USER
    run.wait_for(lambda s: s["sync"] is not None, timeout=60, what="sync watching")
    return run


def wait_files(portal: FakeQuixPortal, count: int, timeout: float = 30) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(portal.state.files) >= count:
            return list(portal.state.files)
        time.sleep(0.05)
    raise AssertionError(f"only {portal.state.files} arrived")


def pushes(portal: FakeQuixPortal) -> list[dict[str, object]]:
    return [c for c in portal.state.calls if "/files/" in str(c["path"])]


def test_edits_arrive_once_in_order_and_nothing_under_state(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    run = start(orchestrator, app, portal)
    assert run.get("/-/status")[0] == 200  # a Quix user is signed in
    status = run.wait_ready()
    assert status["state"]["persistent"] is True and status["state"]["warning"] is None
    # What the installers and the orchestrator own under the state folder, Python files included.
    (app / "state" / "cache" / "uv" / "pkg").mkdir(parents=True, exist_ok=True)
    (app / "state" / "cache" / "uv" / "pkg" / "module.py").write_text("x = 1\n")
    (app / "state" / "venv" / "lib" / "extra.py").write_text("y = 2\n")
    (app / "notebook.py").write_text("# first edit\n")
    (app / "second.py").write_text("# a new notebook\n")
    files = wait_files(portal, 2)
    assert files == [("notebook.py", "# first edit\n"), ("second.py", "# a new notebook\n")]
    assert all(c["token"] == USER and c["x_version"] == "2.0" for c in pushes(portal))
    status = run.wait_for(
        lambda s: s["sync"]["pending"] == [] and s["sync"]["last_sync_at"], what="synced"
    )
    assert status["sync"]["last_error"] is None and status["sync"]["errors"] == {}
    (app / "third.py").write_text("# later\n")
    wait_files(portal, 3)
    assert not [name for name, _ in portal.state.files if name.startswith("state")]
    assert len(portal.state.files) == 3, "each edit is pushed once"


def test_an_edit_made_during_an_outage_survives_a_container_replacement(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    run = start(orchestrator, app, portal)
    portal.state.down = True
    (app / "notebook.py").write_text(EDIT)
    status = run.wait_for(
        lambda s: (s["sync"]["last_error"] or "").startswith("could not push notebook.py"),
        what="error shown",
    )
    assert status["sync"]["pending"] == ["notebook.py"] and status["sync"]["durable"] is True
    assert run.terminate() == 0
    assert portal.state.files == []

    # A new container from the same image: the notebook is the image's original again.
    (app / "notebook.py").write_text(NOTEBOOK, encoding="utf-8")
    portal.state.down = False
    again = start(orchestrator, app, portal)
    assert again.get("/-/status")[0] == 200  # a Quix user is signed in again
    assert wait_files(portal, 1) == [("notebook.py", EDIT)]
    again.wait_for(
        lambda s: s["sync"]["pending"] == [] and s["sync"]["last_error"] is None, what="synced"
    )
    assert (app / "notebook.py").read_text() == EDIT, "the user's edit is back in the notebook"
    assert len(portal.state.files) == 1
    assert list((app / "state" / "quix-sync-pending").iterdir()) == []


def test_a_notebook_changed_in_quix_meanwhile_keeps_both_versions(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    run = start(orchestrator, app, portal)
    portal.state.down = True
    (app / "notebook.py").write_text(EDIT)
    run.wait_for(lambda s: s["sync"]["last_error"] is not None, what="error shown")
    assert run.terminate() == 0

    changed_in_quix = "# someone changed this in Quix\n"
    (app / "notebook.py").write_text(changed_in_quix)
    portal.state.down = False
    again = start(orchestrator, app, portal)
    assert again.get("/-/status")[0] == 200
    files = wait_files(portal, 1)
    assert (app / "notebook.py").read_text() == changed_in_quix, "Quix's version stays in place"
    conflicts = sorted(app.glob("notebook.conflict-*.py"))
    assert len(conflicts) == 1 and conflicts[0].read_text() == EDIT
    assert files == [(conflicts[0].name, EDIT)], "the user's edit is pushed beside it"
    status = again.wait_for(lambda s: s["sync"]["pending"] == [], what="synced")
    (conflict,) = status["sync"]["conflicts"]
    assert conflict["file"] == "notebook.py" and conflict["saved_as"] == conflicts[0].name
    assert conflicts[0].name in conflict["message"]


def test_a_file_that_cannot_be_synced_is_reported_and_does_not_stop_the_others(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    run = start(orchestrator, app, portal)
    portal.state.refused_files.add("refused.py")
    (app / "latin1.py").write_bytes(b"# caf\xe9\n")
    (app / "refused.py").write_text("# Quix will not take this path\n")
    (app / "good.py").write_text("# fine\n")
    assert wait_files(portal, 1) == [("good.py", "# fine\n")]
    status = run.wait_for(
        lambda s: {"latin1.py", "refused.py"} <= set(s["sync"]["errors"]), what="per-file errors"
    )
    assert "UTF-8" in status["sync"]["errors"]["latin1.py"]
    assert "HTTP 400" in status["sync"]["errors"]["refused.py"]
    assert status["sync"]["pending"] == ["refused.py"], "kept, not lost"
    (app / "later.py").write_text("# still syncing\n")
    assert wait_files(portal, 2)[1] == ("later.py", "# still syncing\n")
    (app / "latin1.py").write_text("# café, now UTF-8\n", encoding="utf-8")
    assert wait_files(portal, 3)[2] == ("latin1.py", "# café, now UTF-8\n")
    run.wait_for(lambda s: set(s["sync"]["errors"]) == {"refused.py"}, what="error cleared")


def test_a_deleted_notebook_is_listed_as_not_propagated(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    run = start(orchestrator, app, portal)
    (app / "notebook.py").unlink()
    status = run.wait_for(
        lambda s: s["sync"]["not_propagated"] == ["notebook.py"], what="deletion listed"
    )
    assert status["sync"]["pending"] == []
    assert pushes(portal) == [], "nothing was pushed for a deletion the portal cannot make"


def test_a_refused_token_keeps_the_edit_pending_and_asks_to_sign_in(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    run = start(orchestrator, app, portal)
    assert run.get("/-/status")[0] == 200  # USER signed in (and is cached as allowed)
    portal.state.allowed_tokens.discard(USER)  # ... and then their token expired
    (app / "notebook.py").write_text("# edited with an expired token\n")
    status = run.wait_for(lambda s: s["sync"]["needs_sign_in"], what="sign in asked")
    assert "sign in again" in status["sync"]["needs_sign_in"]
    assert status["sync"]["pending"] == ["notebook.py"]
    tokens = {c["token"] for c in pushes(portal)}
    assert tokens == {USER}, "never retried under the service's own token"
    attempts = len(pushes(portal))
    time.sleep(1.5)  # three poll rounds: the same refused token is not tried again
    assert len(pushes(portal)) == attempts

    fresh = "quix-user-token-0002"
    portal.state.allowed_tokens.add(fresh)
    run.token = fresh
    assert run.get("/-/status")[0] == 200  # signs in again
    assert wait_files(portal, 1) == [("notebook.py", "# edited with an expired token\n")]
    assert pushes(portal)[-1]["token"] == fresh
    run.wait_for(lambda s: s["sync"]["needs_sign_in"] is None, what="sign-in notice gone")


def test_a_deployment_restart_pushes_pending_edits_first(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    run = orchestrator(
        app,
        app / "state",
        "--auth",
        "quix",
        "--sync-debounce",
        "600",
        env=quix_env(portal, app),
    )
    run.token = USER
    run.wait_for(lambda s: s["sync"] is not None, timeout=60, what="sync watching")
    (app / "notebook.py").write_text("# saved just before the restart\n")
    run.wait_for(lambda s: s["sync"]["pending"] == ["notebook.py"], what="pending")
    request = urllib.request.Request(
        run.base + "/-/restart",
        data=json.dumps({"scope": "deployment"}).encode(),
        headers={"Content-Type": "application/json", **run.auth},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
    run.wait_for(
        lambda s: (s["notice"] or {}).get("message", "").startswith("Quix accepted"), what="notice"
    )
    order = [
        "file" if "/files/" in str(c["path"]) else "restart"
        for c in portal.state.calls
        if "/files/" in str(c["path"]) or "deployments" in str(c["path"])
    ]
    assert order == ["file", "restart"]


def test_sigterm_pushes_pending_edits(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    run = orchestrator(
        app,
        app / "state",
        "--sync-debounce",
        "600",
        "--quix-commit-message-param",
        "commitMessage",
        env=quix_env(portal, app),
    )
    portal.state.allowed_tokens.add(run.token)
    run.wait_for(lambda s: s["sync"] is not None, timeout=60, what="sync watching")
    (app / "notebook.py").write_text("# saved just before the stop\n")
    run.wait_for(lambda s: s["sync"]["pending"] == ["notebook.py"], what="pending")
    assert run.terminate() == 0
    assert portal.state.files == [("notebook.py", "# saved just before the stop\n")]
    (push,) = pushes(portal)
    assert push["query"] == {"commitMessage": ["[AutoCommit] Updated notebook.py"]}


def test_quix_without_state_says_what_is_lost(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    run = orchestrator(app, app / "state", env=quix_env(portal, app, state=False))
    portal.state.allowed_tokens.add(run.token)
    status = run.wait_for(lambda s: s["state"] is not None and s["sync"] is not None, 60)
    assert status["state"]["persistent"] is False
    warning = status["state"]["warning"]
    assert "installed packages" in warning and "Enable State" in warning
    assert "nowhere durable" in warning
    assert status["sync"]["durable"] is False


def test_off_outside_quix(orchestrator: OrchestratorFactory, notebook_dir: Path) -> None:
    run = orchestrator(notebook_dir, quix=False)
    status = run.wait_ready()
    assert status["sync"] is None


def test_the_suites_default_is_quixs_layout(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    run = orchestrator(notebook_dir)
    status = run.wait_ready()
    assert status["state"] == {
        "path": str(notebook_dir / "state"),
        "persistent": True,
        "warning": None,
    }
    assert status["sync"] is not None and status["sync"]["durable"] is True


def test_pushes_carry_the_token_of_the_person_holding_the_notebook(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    from websockets.sync.client import connect

    editor, bystander = "quix-editor-token-01", "quix-bystander-token"
    portal.state.allowed_tokens |= {editor, bystander}
    run = start(orchestrator, app, portal)
    run.token = editor
    run.wait_ready()
    url = run.base.replace("http", "ws") + "/ws?session_id=s_sync_1&file=notebook.py"
    with connect(  # the editor's kernel WebSocket, as marimo's page opens it
        url,
        open_timeout=30,
        origin=run.base,
        additional_headers={"Authorization": f"Bearer {editor}"},
    ) as socket:
        assert json.loads(socket.recv(timeout=60))
        run.token = bystander
        assert run.get("/-/status")[0] == 200  # someone else signs in later
        (app / "notebook.py").write_text("# the editor's change\n")
        wait_files(portal, 1)
    assert pushes(portal)[-1]["token"] == editor


def test_who_edits_the_latest_saver_first_then_the_kernel_socket() -> None:
    from orchestrator.quix.editors import Editors

    editors = Editors()
    assert editors.token() is None
    editors.saw("/ws", "GET", 101, "socket-holder")
    assert editors.token() == "socket-holder"
    editors.saw("/api/kernel/save", "POST", 403, "refused-saver")
    assert editors.token() == "socket-holder", "a refused save says nothing about who edits"
    editors.saw("/api/kernel/save", "POST", 200, "tok-saver-1")
    editors.saw("/ws", "GET", 101, "later-socket")
    assert editors.token() == "tok-saver-1"
    assert "tok-" not in repr(editors)


def test_a_rename_is_a_push_and_a_delete_when_the_portal_can_delete(tmp_path: Path) -> None:
    import asyncio

    from jobs.layout import StateLayout
    from jobs.notebook_sync import NotebookSync

    app = tmp_path / "app"
    layout = StateLayout(app / "state")
    (app / "state" / "venv").mkdir(parents=True)
    (app / "state" / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (app / "state" / "venv" / "module.py").write_text("x = 1\n")
    (app / "notebook.py").write_text(NOTEBOOK)
    pushed: list[str] = []
    deleted: list[str] = []

    async def push(path: str, text: str) -> None:
        pushed.append(path)

    async def delete(path: str) -> None:
        deleted.append(path)

    sync = NotebookSync(
        app,
        layout.sync_state,
        layout.sync_blobs,
        push,
        lambda _: None,
        delete=delete,
        excluded=(layout.root,),
        debounce=5.0,
    )
    sync.reconcile()
    assert set(sync.state.synced) == {"notebook.py"}, "nothing under the state folder"
    (app / "notebook.py").rename(app / "renamed.py")
    sync.scan()
    asyncio.run(sync.flush())
    assert (pushed, deleted) == (["renamed.py"], ["notebook.py"])
    assert sync.public()["pending"] == [] and sync.public()["not_propagated"] == []
    assert set(sync.state.synced) == {"renamed.py"}


def test_a_damaged_pending_list_never_writes_outside_the_notebook_folder(tmp_path: Path) -> None:
    from jobs.layout import StateLayout
    from jobs.notebook_sync import SyncState

    layout = StateLayout(tmp_path / "app" / "state")
    layout.root.mkdir(parents=True)
    good = "a" * 64
    layout.sync_state.write_text(
        json.dumps(
            {
                "pending": {
                    "../outside.py": {"digest": good, "since": 1.0},
                    "/etc/owned.py": {"digest": good, "since": 1.0},
                    "nb.py": {"digest": "../../x", "since": 1.0},
                    "ok.py": {"digest": good, "since": 2.0},
                    "gone.py": {"digest": None, "since": 3.0},
                }
            }
        )
    )
    assert set(SyncState.load(layout.sync_state).pending) == {"ok.py", "gone.py"}


def test_pushes_carry_the_token_of_the_person_who_saved_through_marimo(
    orchestrator: OrchestratorFactory, app: Path, portal: FakeQuixPortal
) -> None:
    import re

    from websockets.sync.client import connect

    holder, saver, bystander = "quix-holder-token-01", "quix-saver-token-001", "quix-bystander-02"
    portal.state.allowed_tokens |= {holder, saver, bystander}
    run = start(orchestrator, app, portal)
    run.token = holder
    run.wait_ready()
    url = run.base.replace("http", "ws") + "/ws?session_id=s_save_1&file=notebook.py"
    with connect(
        url,
        open_timeout=30,
        origin=run.base,
        additional_headers={"Authorization": f"Bearer {holder}"},
    ) as socket:
        assert json.loads(socket.recv(timeout=60))
        run.token = saver
        _, _, page = run.get("/?file=notebook.py", {"Accept": "text/html"})
        found = re.search(rb'<marimo-server-token data-token="([^"]+)"', page)
        assert found, "marimo's page carries its server token"
        body = {
            "cellIds": ["Hbol"],
            "codes": ["saved = 'by the saver'"],
            "names": ["_"],
            "configs": [{}],
            "filename": "notebook.py",
        }
        request = urllib.request.Request(
            run.base + "/api/kernel/save",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Marimo-Session-Id": "s_save_1",
                "Marimo-Server-Token": found.group(1).decode(),
                "Origin": run.base,
                **run.auth,
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        run.token = bystander
        assert run.get("/-/status")[0] == 200  # someone else signs in after the save
        files = wait_files(portal, 1)
    assert "by the saver" in files[0][1]
    assert pushes(portal)[-1]["token"] == saver
