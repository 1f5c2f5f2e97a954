"""``/-/events``: the current status at once, every change after it, job log lines, keep-alives."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

from tests.support.orchestrator import OrchestratorFactory


def sse_events(
    port: int, headers: dict[str, str], timeout: float = 60
) -> Iterator[tuple[str, str]]:
    """(event, data) pairs; comments come as ("comment", text)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("GET", "/-/events", headers={"Accept": "text/event-stream", **headers})
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    event, data = "message", []
    try:
        while True:
            raw = response.fp.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                yield "comment", line[1:].strip()
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                yield event, "\n".join(data)
                event, data = "message", []
    finally:
        connection.close()


def test_a_watcher_sees_status_at_once_then_changes_logs_and_keepalives(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n", encoding="utf-8")
    run = orchestrator(notebook_dir, None, "--sse-keepalive", "0.5")
    run.wait_listening()
    events = sse_events(run.port, run.auth)

    first_event, first_data = next(events)
    assert first_event == "status"
    first = json.loads(first_data)
    assert {"phase", "ready", "boot_id", "steps", "marimo"} <= first.keys()
    assert [step["name"] for step in first["steps"]] == ["state", "venv", "requirements", "marimo"]

    phases, logs, comments = [], [], 0
    ready_status = None
    for event, data in events:
        if event == "status":
            status = json.loads(data)
            phases.append(status["phase"])
            if status["ready"]:
                ready_status = status
        elif event == "log":
            logs.append(json.loads(data))
        elif event == "comment" and data == "keep-alive":
            comments += 1
        if ready_status is not None and comments >= 1:
            break
    assert ready_status is not None and ready_status["boot_id"] == first["boot_id"]
    assert any(record["source"] == "uv" and record["step"] == "requirements" for record in logs)
    assert any(record["source"] == "marimo" for record in logs)
    assert comments >= 1


def test_a_late_joiner_gets_the_current_state_at_once(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    run = orchestrator(notebook_dir)
    run.wait_ready()
    event, data = next(sse_events(run.port, run.auth))
    assert event == "status"
    assert json.loads(data)["ready"] is True


def test_changes_published_from_a_worker_thread_reach_every_watcher() -> None:
    """Notebook sync reports from its scan thread: its status still reaches each watcher (and
    in order: the last one seen is the last one published)."""
    import asyncio
    import threading

    import tornado.httpserver
    import tornado.web

    from orchestrator.status import StatusBoard
    from orchestrator.web.handlers import EventsHandler
    from tests.support.orchestrator import free_port

    class AdmitsEveryone:
        async def admit(self, handler: tornado.web.RequestHandler) -> bool:
            return True

    async def main() -> None:
        board = StatusBoard()
        app = tornado.web.Application(
            [(r"/-/events", EventsHandler, {"board": board, "guard": AdmitsEveryone()})]
        )
        port = free_port()
        server = tornado.httpserver.HTTPServer(app)
        server.listen(port, "127.0.0.1")
        watchers = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /-/events HTTP/1.1\r\nHost: t\r\n\r\n")
            await reader.readuntil(b'"phase"')  # the first status: subscribed
            watchers.append((reader, writer))

        def publish() -> None:
            for n in range(50):
                board.sync_changed({"pending": [f"n{n}.py"], "last_error": None})

        thread = threading.Thread(target=publish)
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        for reader, writer in watchers:
            seen = b""
            async with asyncio.timeout(10):
                while b'"n49.py"' not in seen:
                    seen += await reader.read(65536)
            writer.close()
        server.stop()

    asyncio.run(main())
